"""A real mailer for the client's tests: `python -m mailer dev` (API + worker in one process)
on a free 127.0.0.1 port, with its own data directory (SQLite file, outbox folder), or with
MAILER_TEST_BACKEND=postgres a fresh PostgreSQL database and a Redis database
(MAILER_TEST_REDIS_DB). An admin key is made with `mailer keys create` before it starts.
Needs the `mailer` package installed in the same environment (the repository's .venv)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BACKEND = os.environ.get("MAILER_TEST_BACKEND", "sqlite")
PG = "postgresql://postgres@127.0.0.1:5432"
_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class LiveServer:
    url: str
    admin_key: str
    outbox: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    paths: frozenset[str]
    database: str | None
    queue: str

    def has_path(self, path: str) -> bool:
        return path in self.paths

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(data_dir: Path, database: str | None, name: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAILER_", "PYTEST"))
        and k not in {"DATABASE_URL", "REDIS_URL", "MAIL_TRANSPORT", "SMTP_URL", "PORT", "HOST"}
    }
    env.update(
        {
            "APP_ENV": "test",
            "MAILER_DATA_DIR": str(data_dir),
            "MAIL_TRANSPORT": "outbox",
            "OUTBOX_DIR": str(data_dir / "outbox"),
            "LOG_FORMAT": "json",
            "SNS_VERIFY": "false",
            # Outbound webhooks may reach the tests' receiver on 127.0.0.1.
            "WEBHOOK_ALLOW_PRIVATE": "true",
        }
    )
    if database is not None:
        redis_db = os.environ.get("MAILER_TEST_REDIS_DB", "15")
        env["DATABASE_URL"] = f"{PG}/{database}"
        env["REDIS_URL"] = f"redis://127.0.0.1:6379/{redis_db}"
        env["QUEUE_NAME"] = _queue(name)
    return env


def _mailer(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mailer {' '.join(args)} failed: {done.stdout}\n{done.stderr}")
    return done.stdout


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def start(data_dir: Path, name: str = "main", settings: dict[str, str] | None = None) -> LiveServer:
    """A mailer on a free port; `name` tells apart several in one session, `settings` are
    extra environment variables (API_RATE_LIMIT=...)."""
    database = None
    if BACKEND == "postgres":
        database = f"mailer_client_tests_{os.getpid()}_{name}"
        _psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        _psql(f'CREATE DATABASE "{database}"')
    env = _environment(data_dir, database, name)
    env.update(settings or {})
    _mailer(["migrate"], env, data_dir)
    created = _mailer(["keys", "create", "client-tests", "--admin"], env, data_dir)
    keys = [line.strip() for line in created.splitlines() if _KEY.match(line.strip())]
    if len(keys) != 1:
        raise RuntimeError(f"no key in the output of mailer keys create: {created}")
    log_path = data_dir / "mailer.log"
    for _ in range(3):  # a free port can be taken before mailer binds it: then another
        url, process, spec = _serve(env, data_dir, log_path)
        if spec is not None:
            break
        if "already in use" not in log_path.read_text(errors="replace"):
            raise RuntimeError(f"mailer dev did not start: {log_path.read_text()}")
    else:
        raise RuntimeError(f"mailer dev found no free port: {log_path.read_text()}")
    assert isinstance(spec, dict)
    return LiveServer(
        url=url,
        admin_key=keys[0],
        outbox=data_dir / "outbox",
        log_path=log_path,
        process=process,
        paths=frozenset(spec.get("paths", {})),
        database=database,
        queue=_queue(name),
    )


def _serve(
    env: dict[str, str], data_dir: Path, log_path: Path
) -> tuple[str, subprocess.Popen[bytes], object]:
    """`mailer dev` on a free port: its URL, process and OpenAPI document (None: it exited
    or did not answer within a minute)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "dev", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            return url, process, _get_json(f"{url}/openapi.json")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                return url, process, None
            time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def stop(server: LiveServer) -> None:
    stop_process(server.process)
    if server.database is not None:
        _psql(f'DROP DATABASE IF EXISTS "{server.database}" WITH (FORCE)')
        _drop_queue_keys(server.queue)


def _queue(name: str) -> str:
    return f"client-tests-{os.getpid()}-{name}"


def _drop_queue_keys(queue: str) -> None:
    """The queue's keys in the test Redis database (its name is this server's own)."""
    import redis

    db = int(os.environ.get("MAILER_TEST_REDIS_DB", "15"))
    connection = redis.Redis(host="127.0.0.1", port=6379, db=db)
    try:
        keys = list(connection.scan_iter(match=f"*:{queue}:*", count=1000))
        if keys:
            connection.delete(*keys)
    finally:
        connection.close()
