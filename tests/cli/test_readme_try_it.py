"""The README's "Try it" block, run as written against a started `mailer dev` (embedded
default, a non-default PORT, the data directory under a fresh HOME): the seeded template
sends, the messages land in the outbox the README lists, and their unsubscribe links point
at the port the server listens on. Also: every start of `mailer dev` says how to make a
new admin key, and only the first one seeds."""

from __future__ import annotations

import email
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mailer.cli.main import NEW_ADMIN_KEY_HINT
from tests.cli.process import HEX64, clean_env

README = Path(__file__).resolve().parents[2] / "README.md"
KEY_LINE = "KEY=...   # the admin key printed on first start"
START_TIMEOUT = 120.0

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the README uses curl")


def try_it_block() -> str:
    text = README.read_text()
    section = text.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Try it section has one bash block"
    block: str = blocks[0]
    assert block.startswith(KEY_LINE + "\n")
    return block


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 3000
    return port


class Dev:
    """`mailer dev` as a subprocess; its output up to the serving line."""

    def __init__(self, env: dict[str, str], cwd: Path, port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "dev"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        watchdog = threading.Timer(START_TIMEOUT, self.process.kill)
        watchdog.start()
        lines: list[str] = []
        try:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                lines.append(raw.decode())
                if NEW_ADMIN_KEY_HINT in lines[-1]:
                    break
        finally:
            watchdog.cancel()
        self.output = "".join(lines)
        assert NEW_ADMIN_KEY_HINT in self.output, self.output
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()
        self.wait_until_healthy()

    def _read_rest(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/api/v1/health", timeout=5
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._drain.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    directory = tmp_path / "home"
    directory.mkdir()
    return directory


def test_readme_try_it_runs_as_written_on_another_port(home: Path, tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(HOME=str(home), PORT=str(port), APP_ENV="development")
    outbox = home / ".local" / "share" / "mailer" / "outbox"

    dev = Dev(env, tmp_path, port)
    try:
        key = HEX64.findall(dev.output)
        assert len(key) == 1, dev.output
        assert "Created the sample template 'Welcome Email'" in dev.output
        assert f"http://127.0.0.1:{port}" in dev.output
        assert f"Outbox: {outbox}" in dev.output

        script = try_it_block().replace(KEY_LINE, f"KEY={key[0]}", 1)
        shell_env = {**env, "PATH": os.environ["PATH"]}
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=shell_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"recipients":2' in result.stderr.replace(" ", "")  # the batch answer (tee)

        deadline = time.monotonic() + 60
        while len(list(outbox.glob("*.eml"))) < 2:
            assert time.monotonic() < deadline, "the two messages never reached the outbox"
            time.sleep(0.1)
        messages = [email.message_from_bytes(p.read_bytes()) for p in outbox.glob("*.eml")]
        assert sorted(m["To"] for m in messages) == ["user1@example.com", "user2@example.com"]
        for message in messages:
            link = f"<http://127.0.0.1:{port}/api/v1/unsubscribe/"
            assert str(message["List-Unsubscribe"]).startswith(link), message["List-Unsubscribe"]
        assert not (tmp_path / "data").exists()
    finally:
        dev.stop()

    again = Dev(env, tmp_path, port)
    try:
        assert HEX64.findall(again.output) == []  # seeded once only
        assert "mailer keys create NAME --admin" in again.output
    finally:
        again.stop()
