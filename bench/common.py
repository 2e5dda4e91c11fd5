"""Shared harness for the benchmarks: a bench database and Redis db of their own, `mailer`
processes started (optionally pinned to a core) and stopped by PID, RSS/CPU sampling,
Redis memory, tables and JSON results.

Environment (all optional):
    BENCH_PG_ADMIN   postgresql://postgres@127.0.0.1:5432/postgres  (creates/drops the db)
    BENCH_REDIS      redis://127.0.0.1:6379                          (server)
    BENCH_REDIS_DB   14                                              (db index)
Each run uses queue name bench-<name>-<pid> and deletes only its own keys, so runs can
share the db.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_SERVER = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "14"))
WORKER_CPU = 1  # the worker is pinned here (taskset -c 1); everything else shares the rest

TEMPLATE = {
    "name": "bench-welcome",
    "subject": "Welcome, {{name}}!",
    "html": (
        "<html><body><h1>Hello {{name}}</h1>"
        "<p>Your code is <b>{{code}}</b>. "
        + "This paragraph stands for the body of a typical transactional message. "
        * 12
        + "</p><p><a href='https://example.com/start?c={{code}}'>Get started</a></p>"
        "{{#if vip}}<p>Thanks for being a VIP.</p>{{/if}}</body></html>"
    ),
    "text": (
        "Hello {{name}}\n\nYour code is {{code}}.\n"
        + "This paragraph stands for the body of a typical transactional message. " * 12
        + "\nGet started: https://example.com/start?c={{code}}\n"
    ),
    "variables": {
        "name": {"type": "string"},
        "code": {"type": "string"},
        "vip": {"type": "boolean", "required": False},
    },
}


def recipients(count: int, start: int = 0, prefix: str = "user") -> list[dict[str, Any]]:
    return [
        {"email": f"{prefix}{i}@example.com", "variables": {"name": f"User {i}", "code": f"c{i}"}}
        for i in range(start, start + count)
    ]


def batch_body(template_id: str, rows: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"template_id": template_id, "recipients": rows, **extra})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "taskset": shutil.which("taskset") is not None,
    }


def busy_neighbours(threshold: float = 20.0) -> list[str]:
    """Other processes using CPU right now (the figures are noisier while they run)."""
    procs = list(psutil.process_iter(["pid", "name", "cmdline"]))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(0.5)
    me = os.getpid()
    found = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            pct = p.cpu_percent(None)
            if pct >= threshold and p.pid != me:
                cmd = " ".join(p.info["cmdline"] or [p.info["name"] or "?"])[:80]
                found.append(f"{p.pid} {pct:.0f}% {cmd}")
    return found


# --------------------------------------------------------------------------- processes


class Proc:
    """A process we started, stopped by its PID only."""

    def __init__(
        self, name: str, args: Sequence[str], env: dict[str, str], cpu: int | None = None
    ) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOGS / f"{name}.log"
        self._log = self.log_path.open("wb")
        argv = list(args)
        if cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(cpu), *argv]
        self.popen = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT)
        )
        self.ps = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.name}: {text!r} not logged in {timeout} s:\n{self.log()[-3000:]}"
        )

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and its children (uvicorn workers)."""
        total = 0.0
        with contextlib.suppress(psutil.Error):
            t = self.ps.cpu_times()
            total += t.user + t.system
            for child in self.ps.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
        return total

    def rss(self) -> int:
        total = 0
        with contextlib.suppress(psutil.Error):
            total += self.ps.memory_info().rss
            for child in self.ps.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        return total

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()


class Sampler:
    """Samples RSS of some processes and Redis used_memory every `interval` s; keeps peaks."""

    def __init__(self, procs: dict[str, Proc], redis_client: Any = None, interval: float = 0.1):
        self.procs = procs
        self.redis = redis_client
        self.interval = interval
        self.peak_rss: dict[str, int] = dict.fromkeys(procs, 0)
        self.start_rss: dict[str, int] = {n: p.rss() for n, p in procs.items()}
        self.redis_start = redis_used_memory(redis_client) if redis_client else 0
        self.redis_peak = self.redis_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, proc in self.procs.items():
                self.peak_rss[name] = max(self.peak_rss[name], proc.rss())
            if self.redis is not None:
                with contextlib.suppress(Exception):
                    self.redis_peak = max(self.redis_peak, redis_used_memory(self.redis))


def new_report(**fields: Any) -> dict[str, Any]:
    """What every bench report starts with: the machine and who else is using it, then
    `fields`."""
    return {"machine": machine(), "neighbours": busy_neighbours(), **fields}


def redis_used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def mb(n: float) -> float:
    return round(n / 2**20, 1)


# --------------------------------------------------------------------------- the app


@dataclass
class Stack:
    """A bench database + Redis db, and the mailer processes running on them."""

    name: str
    database: str = ""
    redis_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    api_url: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        self.database = f"mailer_bench_{self.name}_{os.getpid()}"
        self.redis_url = f"{REDIS_SERVER}/{REDIS_DB}"
        base = PG_ADMIN.rsplit("/", 1)[0]
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MAILER_", "AWS_", "SMTP_", "SEND_", "WORKER_"))
        }
        self.env.update(
            {
                "APP_ENV": "production",
                "DATABASE_URL": f"{base}/{self.database}",
                "REDIS_URL": self.redis_url,
                "QUEUE_NAME": f"bench-{self.name}-{os.getpid()}",
                "LOG_LEVEL": "warning",
                "LOG_FORMAT": "json",
                "UNSUBSCRIBE_SECRET": "bench-unsubscribe-secret-0123456789",
                "PUBLIC_URL": "https://mailer.example.com",
                "MAIL_FROM": "Bench <bench@example.com>",
                "MAX_BATCH_RECIPIENTS": "100000",
                "API_RATE_LIMIT": "0",
                "AWS_ACCESS_KEY_ID": "AKIDBENCH",
                "AWS_SECRET_ACCESS_KEY": "bench-secret",
                "AWS_REGION": "us-east-1",
                "DB_POOL_SIZE": "10",
            }
        )

    def redis(self) -> Any:
        return redis.Redis.from_url(self.redis_url)

    def clear_redis(self) -> None:
        """Delete this run's keys (queue and rate limiter), nobody else's."""
        client = self.redis()
        queue = self.env["QUEUE_NAME"]
        for pattern in (f"bull:{queue}:*", f"bull:{queue}-high:*", f"mailer:{queue}:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])

    async def create(self) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()
        self.clear_redis()
        self.mailer("migrate")
        out = self.mailer("keys", "create", "bench", "--admin")
        match = re.search(r"^([0-9a-f]{64})$", out, re.M)
        if match is None:
            raise RuntimeError(f"no key in: {out}")
        self.key = match.group(1)

    def mailer(self, *args: str, **env: str) -> str:
        result = subprocess.run(
            [PYTHON, "-m", "mailer", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            cwd=str(ROOT),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mailer {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def start_api(self, *, cpu: int | None = None, workers: int = 1, **env: str) -> Proc:
        port = free_port()
        args = [PYTHON, "-m", "mailer", "api", "--port", str(port), "--workers", str(workers)]
        proc = self.start("api", args, cpu=cpu, **env)
        self.api_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/api/v1/health", timeout=1).status_code == 200:
                    if os.environ.get("BENCH_PROFILE") == "py-spy":
                        profile(self, proc)
                    return proc
            if proc.popen.poll() is not None:
                raise RuntimeError(f"api exited:\n{proc.log()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"api did not start:\n{proc.log()[-3000:]}")

    def start_worker(
        self, name: str = "worker", *, cpu: int | None = WORKER_CPU, **env: str
    ) -> Proc:
        args = [PYTHON, "-m", "mailer", "worker"]
        if os.environ.get("BENCH_PROFILE") == "cprofile":
            args[1:1] = ["-m", "cProfile", "-o", str(LOGS / f"cprofile-{name}.out")]
        proc = self.start(name, args, cpu=cpu, LOG_LEVEL="info", **env)
        proc.wait_for_log("worker_started")
        if os.environ.get("BENCH_PROFILE") == "py-spy":
            profile(self, proc)
        return proc

    def start(self, name: str, args: Sequence[str], *, cpu: int | None = None, **env: str) -> Proc:
        proc = Proc(name, args, {**self.env, **env}, cpu)
        self.procs.append(proc)
        return proc

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}

    def client(self, timeout: float = 120.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api_url, headers=self.headers(), timeout=timeout)

    async def create_template(self) -> str:
        async with self.client() as c:
            r = await c.post("/api/v1/templates", json=TEMPLATE)
            r.raise_for_status()
            return str(r.json()["id"])

    async def post_batch(self, body: bytes) -> tuple[dict[str, Any], float]:
        async with self.client() as c:
            started = time.perf_counter()
            r = await c.post("/api/v1/batches", content=body)
            elapsed = time.perf_counter() - started
        if r.status_code != 201:
            raise RuntimeError(f"POST /batches: {r.status_code} {r.text[:500]}")
        return r.json(), elapsed

    async def wait_completed(
        self, batch_id: str, timeout: float, poll: float = 0.2
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        async with self.client() as c:
            while True:
                r = await c.get(f"/api/v1/batches/{batch_id}")
                r.raise_for_status()
                batch: dict[str, Any] = r.json()
                if batch["status"] in ("COMPLETED", "CANCELLED"):
                    return batch
                if time.monotonic() > deadline:
                    raise TimeoutError(f"batch {batch_id} not done in {timeout} s: {batch}")
                await asyncio.sleep(poll)

    async def backend_cpu(self) -> dict[int, float]:
        """CPU seconds (user + system) of each PostgreSQL backend serving this run's
        database, by PID: the database's own work for the processes (index maintenance
        included), which their own CPU does not show."""
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
            )
        finally:
            await conn.close()
        out: dict[int, float] = {}
        for row in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(row["pid"]).cpu_times()
                out[row["pid"]] = times.user + times.system
        return out

    async def status_counts(self, batch_id: str | None = None) -> dict[str, int]:
        conn = await asyncpg.connect(self.env["DATABASE_URL"])
        try:
            where = "WHERE batch_id = $1" if batch_id else ""
            args = [batch_id] if batch_id else []
            rows = await conn.fetch(
                f"SELECT status, count(*) AS n FROM recipients {where} GROUP BY status",  # noqa: S608
                *args,
            )
        finally:
            await conn.close()
        return {r["status"]: int(r["n"]) for r in rows}

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    async def drop(self) -> None:
        self.stop_all()
        with contextlib.suppress(Exception):
            self.clear_redis()
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await conn.close()


def profile(stack: Stack, proc: Proc) -> None:
    """BENCH_PROFILE=py-spy: py-spy samples the process until it exits (raw stacks in logs/)."""
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if Path(spy).exists():
        out = LOGS / f"profile-{proc.name}.txt"
        args = [
            spy,
            "record",
            "--pid",
            str(proc.pid),
            "-r",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "-o",
            str(out),
        ]
        stack.procs.insert(0, Proc(f"py-spy-{proc.name}", args, dict(os.environ)))


@contextlib.contextmanager
def stopping(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


# --------------------------------------------------------------------------- mock servers


def start_mock_ses(
    stack: Stack | None, *, latency: float, cpu: int | None = 0, extra: Sequence[str] = ()
) -> tuple[Proc, str]:
    port = free_port()
    args = [
        PYTHON,
        str(BENCH / "mock_ses.py"),
        "--port",
        str(port),
        "--latency",
        str(latency),
        *extra,
    ]
    env = dict(stack.env if stack else os.environ)
    proc = stack.start("mock_ses", args, cpu=cpu) if stack else Proc("mock_ses", args, env, cpu)
    proc.wait_for_log("listening")
    return proc, f"http://127.0.0.1:{port}"


def mock_stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/_bench/stats", timeout=30).json())


def mock_reset(url: str) -> None:
    httpx.post(f"{url}/_bench/reset", timeout=10).raise_for_status()


def smtp_sink_path() -> str:
    """postfix's smtp-sink, installed from Debian (non-interactively) when missing. postfix's
    own daemon is never left running."""
    found = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
    )
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("smtp-sink missing: apt-get install postfix (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # "No configuration": postfix gets no main.cf and its daemon is not set up to start.
    subprocess.run(
        ["debconf-set-selections"],
        input="postfix postfix/main_mailer_type select No configuration\n",
        text=True,
        env=env,
        check=False,
    )
    print("installing postfix (for smtp-sink / smtp-source) ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"],
        env=env,
        check=True,
    )
    stop_postfix_daemon()
    return shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def stop_postfix_daemon() -> None:
    if shutil.which("postfix") is None:
        return
    status = subprocess.run(["postfix", "status"], capture_output=True, text=True, check=False)
    if status.returncode == 0 and "is running" in (status.stdout + status.stderr):
        subprocess.run(["postfix", "stop"], capture_output=True, check=False)


def start_smtp_sink(stack: Stack | None = None, *, cpu: int | None = 0) -> tuple[Proc, int]:
    sink = smtp_sink_path()
    port = free_port()
    user = "nobody" if os.geteuid() == 0 else ""
    args = [sink, *(["-u", user] if user else []), f"127.0.0.1:{port}", "1024"]
    proc = (
        stack.start("smtp_sink", args, cpu=cpu)
        if stack
        else Proc("smtp_sink", args, dict(os.environ), cpu)
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return proc, port
        time.sleep(0.05)
    raise RuntimeError(f"smtp-sink did not start: {proc.log()}")


# --------------------------------------------------------------------------- output


def print_table(title: str, rows: Sequence[tuple[str, Any, Any, Any]]) -> None:
    """rows: (metric, value, target, verdict)."""
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'metric':{width}}{'value':>14}  {'target':<18}{'ok':>4}")
    print("-" * (width + 40))
    for metric, value, target, ok in rows:
        v = (
            f"{value:,.2f}"
            if isinstance(value, float)
            else f"{value:,}"
            if isinstance(value, int)
            else str(value)
        )
        mark = "" if ok is None else ("yes" if ok else "NO")
        print(f"{metric:{width}}{v:>14}  {target or '':<18}{mark:>4}")


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"\nresults: {path.relative_to(ROOT)}")
    return path
