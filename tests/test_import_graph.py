"""The worker side does not depend on the HTTP layer: no module of delivery/, worker/, queue/
or transports/ imports FastAPI or Starlette, directly or through another module.

Every module of those packages is imported in a fresh interpreter, with an import hook that
refuses the web frameworks and reports the chain of mailer modules that asked for them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mailer

WORKER_SIDE = ("delivery", "worker", "queue", "transports")
FORBIDDEN = ("fastapi", "starlette")

_CHILD = """
import importlib, json, sys, traceback
from importlib.abc import MetaPathFinder

FORBIDDEN = set(json.loads(sys.argv[1]))
modules = json.loads(sys.argv[2])
found = []


class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in FORBIDDEN:
            chain = [f.filename for f in traceback.extract_stack() if "/mailer/" in f.filename]
            found.append({"module": name, "chain": chain})
            raise ImportError(f"{name} is not allowed here")
        return None


sys.meta_path.insert(0, Refuse())
errors = {}
for module in modules:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        errors[module] = str(exc)
print(json.dumps({"found": found, "errors": errors}))
"""


def worker_side_modules() -> list[str]:
    root = Path(mailer.__file__).parent
    names = []
    for package in WORKER_SIDE:
        for path in sorted((root / package).rglob("*.py")):
            parts = ("mailer", *path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


def imports_of(modules: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(FORBIDDEN), json.dumps(modules)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_walk_covers_every_worker_side_package() -> None:
    modules = worker_side_modules()
    for package in WORKER_SIDE:
        assert f"mailer.{package}" in modules
    assert "mailer.delivery.chunk" in modules and "mailer.worker.runtime" in modules


def test_worker_side_modules_do_not_import_the_web_framework() -> None:
    result = imports_of(worker_side_modules())
    assert result == {"found": [], "errors": {}}, json.dumps(result, indent=1)


def test_the_check_sees_an_indirect_import() -> None:
    """The hook itself works: the API application, which imports FastAPI through other
    modules, is caught, with the chain that led there."""
    result = imports_of(["mailer.app"])
    found = result["found"]
    assert isinstance(found, list) and found
    assert any(str(hop).endswith("mailer/app.py") for hop in found[0]["chain"])
