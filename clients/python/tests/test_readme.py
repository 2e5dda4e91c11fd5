"""The Python examples of the READMEs run as written against the live server (its URL and
key put in place of the examples')."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

from mailer_client import MailerClient
from tests.live_server import LiveServer

HERE = Path(__file__).resolve().parents[1]
EXAMPLE_URL = "http://127.0.0.1:3000"


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def _run(code: str, server: LiveServer, **names: object) -> str:
    code = code.replace(EXAMPLE_URL, server.url).replace('api_key="..."', "api_key=KEY")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README", "exec"), {"KEY": server.admin_key, **names})  # noqa: S102
    return out.getvalue()


def test_main_readme_example(server: LiveServer, client: MailerClient) -> None:
    [block] = [b for b in _python_blocks(HERE.parents[1] / "README.md") if "mailer_client" in b]
    if not any(t.name == "Welcome Email" for t in client.templates.iter()):
        client.templates.create(
            "Welcome Email", subject="Welcome {{name}}", html="<h1>Welcome {{name}}!</h1>"
        )
    counts = ast.literal_eval(_run(block, server).strip())
    assert sum(counts.values()) == 2  # the batch of two, whatever their status


def test_client_readme_first_example(server: LiveServer) -> None:
    block = _python_blocks(HERE / "README.md")[0]
    first, last = _run(block, server).strip().splitlines()
    assert sum(ast.literal_eval(first).values()) == 2
    assert last == "all_sent 2"
