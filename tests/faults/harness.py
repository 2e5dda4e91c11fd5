"""The fault suite's harness: whole `mailer` processes, the tests' own peers, the services
they run on (restartable), and the figures every scenario prints.

    with Cluster(env, tmp_path) as cluster:       # stops every process it started
        api = cluster.start_api()                 # `mailer api --port <free port>`
        cluster.start_worker(); cluster.start_worker()
        ...
    figures = await tally("SIGKILL x3", batch, sink.received(), database_url, allowed=30)
    figures.report()                              # prints; appended to MAILER_FAULTS_REPORT

Size: MAILER_FAULTS=quick (default: ~600 recipients per scenario, run by the normal test
suite) or full (5,000 and more; `scripts/faults.sh`). Restarts of Redis and PostgreSQL touch
the machine's servers only when CI is set or MAILER_FAULTS=full; otherwise they use private
instances started here (MAILER_FAULTS_SERVICES=machine|private overrides).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from mailer.auth import service as keys
from mailer.config import normalize_database_url
from mailer.db import create_sessionmaker, session_scope
from mailer.models import Recipient
from tests.fixtures.processes import MailerProcess
from tests.fixtures.ses_server import SesFailure, SesTestServer
from tests.fixtures.smtp_server import ReceivedMessage, SmtpTestServer

MODE = os.environ.get("MAILER_FAULTS", "quick").strip().lower() or "quick"
FULL = MODE == "full"
IN_CI = bool(os.environ.get("CI"))
REPORT_PATH = os.environ.get("MAILER_FAULTS_REPORT")
SEED = int(os.environ.get("MAILER_FAULTS_SEED", str(int(time.time()) % 100_000)))
UNFINISHED = ("PENDING", "SENDING", "RETRYING")
REACHED_PROVIDER = ("SENT", "DELIVERED", "BOUNCED", "COMPLAINED")
WELCOME = {
    "name": "Fault suite",
    "subject": "Hello {{name}}",
    "html": "<p>Hello {{name}}, code {{code}}</p>",
    "text": "Hello {{name}}, code {{code}}",
    "variables": {"name": {"type": "string"}, "code": {"type": "string", "required": False}},
}


def recipients_for(*, full: int = 5000, quick: int = 600) -> int:
    """Recipients per scenario batch for the current mode (MAILER_FAULTS_RECIPIENTS wins)."""
    override = os.environ.get("MAILER_FAULTS_RECIPIENTS")
    if override:
        return int(override)
    return full if FULL else quick


def rng(scenario: str) -> random.Random:
    """A seeded random source per scenario; the seed is printed with the figures."""
    return random.Random(f"{SEED}:{scenario}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def addresses(count: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(count)]


# Processes


class ApiProcess(MailerProcess):
    """`mailer api --port <free port>` on 127.0.0.1."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        super().__init__(["api", "--host", "127.0.0.1", "--port", str(self.port)], env, log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mailer api exited: {self.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"mailer api not up in {timeout} s: {self.log()[-3000:]}")


class Cluster:
    """The processes of one scenario. Leaving the block stops (SIGKILL) any still running."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.api: ApiProcess | None = None
        self.workers: list[MailerProcess] = []
        self._all: list[MailerProcess] = []
        self._count = 0

    def start_api(self, **extra_env: str) -> ApiProcess:
        api = ApiProcess({**self.env, **extra_env}, self.log_dir / "api.log")
        self._all.append(api)
        api.wait_ready()
        self.api = api
        return api

    def start_worker(self, *, wait: bool = True, **extra_env: str) -> MailerProcess:
        """A new `mailer worker`; with wait=False it is returned while still starting."""
        self._count += 1
        worker = MailerProcess(
            ["worker"], {**self.env, **extra_env}, self.log_dir / f"worker{self._count}.log"
        )
        self._all.append(worker)
        self.workers.append(worker)
        if wait:
            worker.wait_for_log("worker_started", timeout=60)
        return worker

    def live_workers(self) -> list[MailerProcess]:
        """Workers running and done starting."""
        return [w for w in self.workers if w.proc.poll() is None and "worker_started" in w.log()]

    def logs(self) -> str:
        return "\n".join(p.log() for p in self._all)

    def stop(self) -> None:
        for process in self._all:
            process.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# The tests' own providers, counting what they accepted per address


class CountingSmtpServer(SmtpTestServer):
    """An SMTP server that takes `delay` seconds per message."""

    def __init__(self, delay: float = 0.0) -> None:
        def pace(_: ReceivedMessage) -> None:
            if delay:
                time.sleep(delay)

        super().__init__(data_policy=pace)

    def __enter__(self) -> CountingSmtpServer:
        self.start()
        return self

    def received(self) -> Counter[str]:
        return Counter(a for m in self.messages for a in m.rcpt_tos)

    def accepted(self) -> int:
        return len(self.messages)


Policy = Callable[[list[str]], SesFailure | None]


class ScriptedSesServer(SesTestServer):
    """SesTestServer plus a `policy` consulted for every send the fixed rules let through
    (random transient errors, throttling bursts ...)."""

    def __init__(self, *, latency: float = 0.0) -> None:
        super().__init__(max_send_rate=None, latency=latency)
        self.policy: Policy | None = None
        self.answers: Counter[str] = Counter()
        self._policy_lock = threading.Lock()

    def _failure_for(self, addresses: list[str]) -> SesFailure | None:
        failure = super()._failure_for(addresses)
        if failure is None and self.policy is not None:
            with self._policy_lock:
                failure = self.policy(addresses)
        with self._policy_lock:
            self.answers[failure.code if failure else "accepted"] += 1
        return failure

    def __enter__(self) -> ScriptedSesServer:
        self.start()
        return self

    def received(self) -> Counter[str]:
        return Counter(a for m in self.messages for a in m.to)

    def accepted(self) -> int:
        return len(self.messages)


def transient_errors(rate: float, random_source: random.Random) -> Policy:
    """`rate` of the sends answered 500 InternalFailure (transient)."""

    def policy(_: list[str]) -> SesFailure | None:
        return SesFailure.server_error(500) if random_source.random() < rate else None

    return policy


def throttling_bursts(every: float, length: float, retry_after: float) -> Policy:
    """Every `every` seconds, `length` seconds during which every send is throttled (429);
    the first burst starts with the first send."""
    started: list[float] = []

    def policy(_: list[str]) -> SesFailure | None:
        if not started:
            started.append(time.monotonic())
        if (time.monotonic() - started[0]) % every < length:
            return SesFailure.throttle(retry_after=retry_after)
        return None

    return policy


# Talking to the API process


async def make_key(database_url: str, *, admin: bool = False, name: str = "faults") -> str:
    engine = create_async_engine(normalize_database_url(database_url))
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            created = await keys.create_key(session, name, admin=admin)
    finally:
        await engine.dispose()
    return created.secret


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_template(http: httpx.AsyncClient, key: str) -> str:
    response = await http.post("/api/v1/templates", json=WELCOME, headers=bearer(key))
    assert response.status_code == 201, response.text
    template_id: str = response.json()["id"]
    return template_id


async def post_batch(
    http: httpx.AsyncClient, key: str, template_id: str, emails: list[str]
) -> dict[str, Any]:
    body = {
        "template_id": template_id,
        "recipients": [
            {"email": e, "variables": {"name": f"N{i}", "code": f"c{i}"}}
            for i, e in enumerate(emails)
        ],
        "metadata": {"suite": "faults"},
    }
    response = await http.post("/api/v1/batches", json=body, headers=bearer(key), timeout=120)
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


async def wait_accepted(sink: CountingSmtpServer | ScriptedSesServer, count: int) -> None:
    """Until the provider accepted `count` messages (the batch must get there)."""
    deadline = time.monotonic() + 300
    while sink.accepted() < count:
        assert time.monotonic() < deadline, f"only {sink.accepted()} accepted"
        await asyncio.sleep(0.01)


async def wait_completed(
    http: httpx.AsyncClient, key: str, batch_id: str, *, timeout: float
) -> dict[str, Any]:
    """Poll GET /batches/:id until COMPLETED, tolerating an API that answers 503 meanwhile."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            response = await http.get(f"/api/v1/batches/{batch_id}", headers=bearer(key))
        except httpx.HTTPError as exc:
            last = repr(exc)
        else:
            last = response.text
            if response.status_code == 200 and response.json()["status"] == "COMPLETED":
                body: dict[str, Any] = response.json()
                return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"batch {batch_id} not completed in {timeout} s; last answer: {last}")


def completion_timeout(recipients: int, per_second: float = 40.0) -> float:
    """Generous: the slowest rate the machine reaches under faults, plus recovery time."""
    return 120.0 + recipients / per_second


# Figures

REPORTED: list[str] = []  # this session's figure lines, printed again in the summary


def remember(line: str) -> None:
    REPORTED.append(line)


async def recipient_states(database_url: str, batch_id: str) -> dict[str, str]:
    engine = create_async_engine(normalize_database_url(database_url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(Recipient.email, Recipient.status).where(Recipient.batch_id == batch_id)
            )
            return {str(email): str(status) for email, status in rows}
    finally:
        await engine.dispose()


@dataclass
class Figures:
    scenario: str
    recipients: int
    received: int  # distinct addresses of the batch the provider accepted
    lost: int  # never reached a final state, or recorded as sent but never received
    duplicates: int  # receipts beyond the first, summed over addresses
    allowed_duplicates: int  # in flight at the crashes (0 where nothing crashed)
    mismatched: int  # received, yet recorded as FAILED/SUPPRESSED/CANCELLED
    stray: int  # received, yet not a recipient of the batch
    states: dict[str, int]
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        states = " ".join(f"{k}={v}" for k, v in sorted(self.states.items()))
        notes = " ".join(f"{k}={v}" for k, v in self.notes.items())
        return (
            f"[{self.scenario}] recipients={self.recipients} received={self.received} "
            f"lost={self.lost} duplicates={self.duplicates} (allowed<={self.allowed_duplicates}) "
            f"mismatched={self.mismatched} stray={self.stray} states: {states}"
            + (f" | {notes}" if notes else "")
        )

    def report(self) -> None:
        remember(self.line())
        print("\nFIGURES " + self.line())
        if REPORT_PATH:
            entry = {"mode": MODE, "seed": SEED, **self.__dict__}
            with open(REPORT_PATH, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")

    def check(self) -> None:
        """The guarantees: nothing lost, duplicates only within what was in flight."""
        assert self.lost == 0, self.line()
        assert self.duplicates <= self.allowed_duplicates, self.line()
        assert self.mismatched == 0, self.line()
        assert self.stray == 0, self.line()


def count(
    scenario: str,
    emails: list[str],
    received: Counter[str],
    states: dict[str, str],
    *,
    allowed_duplicates: int,
    notes: dict[str, Any] | None = None,
) -> Figures:
    expected = set(emails)
    lost = 0
    mismatched = 0
    for email in expected:
        state = states.get(email)
        never_final = state is None or state in UNFINISHED
        if never_final or (state in REACHED_PROVIDER and received[email] == 0):
            lost += 1
        elif state not in REACHED_PROVIDER and received[email] > 0:
            mismatched += 1
    return Figures(
        scenario=scenario,
        recipients=len(expected),
        received=sum(1 for e in expected if received[e] > 0),
        lost=lost,
        duplicates=sum(max(0, received[e] - 1) for e in expected),
        allowed_duplicates=allowed_duplicates,
        mismatched=mismatched,
        stray=sum(n for a, n in received.items() if a not in expected),
        states=dict(Counter(states.values())),
        notes={"seed": SEED, **(notes or {})},
    )


async def tally(
    scenario: str,
    batch_id: str,
    emails: list[str],
    received: Counter[str],
    database_url: str,
    *,
    allowed_duplicates: int = 0,
    notes: dict[str, Any] | None = None,
) -> Figures:
    states = await recipient_states(database_url, batch_id)
    figures = count(
        scenario, emails, received, states, allowed_duplicates=allowed_duplicates, notes=notes
    )
    figures.report()
    return figures


# Services that scenarios restart or empty


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached in {timeout} s")
        time.sleep(0.2)


def services_mode() -> str:
    """'machine': the machine's PostgreSQL/Redis (CI or full runs: nobody else is disturbed
    or the caller asked for it); 'private': instances of this test's own."""
    forced = os.environ.get("MAILER_FAULTS_SERVICES", "").strip().lower()
    if forced in ("machine", "private"):
        return forced
    return "machine" if IN_CI or FULL else "private"


def _redis_up(port: int) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


MACHINE_REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


class RedisService:
    """A Redis that can be restarted (losing everything: no persistence, as on the machine)."""

    def __init__(self, mode: str, work_dir: Path) -> None:
        self.mode = mode
        self.port = 6379 if mode == "machine" else free_port()
        self.work_dir = work_dir
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @staticmethod
    def available(mode: str) -> str | None:
        """None, or why this mode cannot run here."""
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            return "redis-server/redis-cli not installed"
        if mode == "machine" and not _redis_up(6379):
            return "the machine's Redis is not running at 127.0.0.1:6379"
        return None

    def start(self) -> None:
        if self.mode == "machine":
            Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
            Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
            subprocess.run(MACHINE_REDIS_START, check=True, capture_output=True)
        else:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._proc = subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.work_dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        wait_until(lambda: _redis_up(self.port), 30, f"Redis PING on port {self.port}")

    def stop(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            check=False,
        )
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
            self._proc = None
        wait_until(lambda: not _redis_up(self.port), 15, f"Redis on {self.port} stopped")

    def ensure_running(self) -> None:
        if not _redis_up(self.port):
            self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Shut down without saving (everything in it is lost) for the duration of the
        block; always running again afterwards, whatever failed in between."""
        try:
            self.stop()
            yield
        finally:
            self.ensure_running()

    def empty(self, db_url: str) -> str:
        """Empty what mailer uses: FLUSHALL when nobody else can be disturbed (CI, private
        instance), else FLUSHDB on mailer's database index (all of mailer's keys live there)."""
        client = redis.Redis.from_url(db_url)
        try:
            if IN_CI or self.mode == "private":
                client.flushall()
                return "FLUSHALL"
            client.flushdb()
            return "FLUSHDB"
        finally:
            client.close()

    def close(self) -> None:
        """Private instances are stopped; the machine's is left running."""
        if self.mode == "private":
            with contextlib.suppress(Exception):
                self.stop()
        else:
            self.ensure_running()


def _pg_bin(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else None


def _pg_ready(port: int) -> bool:
    probe = subprocess.run(
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)], capture_output=True, check=False
    )
    return probe.returncode == 0


def _machine_cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return [versions[-1] if versions else "15", "main"]


class PostgresService:
    """A PostgreSQL server that can be stopped and started: the machine's (pg_ctlcluster) or
    a private cluster in a temporary directory (initdb + pg_ctl, as the postgres user)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = 5432 if mode == "machine" else free_port()
        # Not under pytest's tmp_path: the postgres user must be able to reach it.
        self.work_dir = Path(tempfile.mkdtemp(prefix="mailer-faults-pg-"))

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @staticmethod
    def available(mode: str) -> str | None:
        if mode == "machine":
            if shutil.which("pg_ctlcluster") is None:
                return "pg_ctlcluster not installed"
            return None if _pg_ready(5432) else "the machine's PostgreSQL is not running"
        if _pg_bin("initdb") is None or _pg_bin("pg_ctl") is None:
            return "PostgreSQL server binaries (initdb, pg_ctl) not installed"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser (initdb refuses root)"
        return None

    def _as_postgres(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    @property
    def _data(self) -> Path:
        return self.work_dir / "pgdata"

    def create(self) -> None:
        if self.mode == "machine":
            return
        initdb = _pg_bin("initdb")
        assert initdb is not None
        if os.geteuid() == 0:
            shutil.chown(self.work_dir, "postgres", "postgres")
        subprocess.run(
            self._as_postgres(
                [initdb, "-D", str(self._data), "-U", "postgres", "-A", "trust", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )
        self.start()

    def start(self) -> None:
        if self.mode == "machine":
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", *_machine_cluster(), "start"],
                check=False,
                capture_output=True,
            )
        else:
            pg_ctl = _pg_bin("pg_ctl")
            assert pg_ctl is not None
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.work_dir} "
                "-c fsync=off -c max_connections=200"
            )
            subprocess.run(
                self._as_postgres(
                    [
                        pg_ctl,
                        "-D",
                        str(self._data),
                        "-o",
                        options,
                        "-l",
                        str(self.work_dir / "pg.log"),
                        "-w",
                        "start",
                    ]
                ),
                check=True,
                capture_output=True,
            )
        wait_until(lambda: _pg_ready(self.port), 60, f"PostgreSQL on {self.port} ready")

    def stop(self) -> None:
        if self.mode == "machine":
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", *_machine_cluster(), "stop"],
                check=False,
                capture_output=True,
            )
        else:
            pg_ctl = _pg_bin("pg_ctl")
            assert pg_ctl is not None
            subprocess.run(
                self._as_postgres([pg_ctl, "-D", str(self._data), "-m", "fast", "-w", "stop"]),
                check=False,
                capture_output=True,
            )
        wait_until(lambda: not _pg_ready(self.port), 60, f"PostgreSQL on {self.port} stopped")

    def ensure_running(self) -> None:
        if not _pg_ready(self.port):
            self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """PostgreSQL stopped for the duration of the block; always started again."""
        try:
            self.stop()
            yield
        finally:
            self.ensure_running()

    def close(self) -> None:
        if self.mode == "private":
            with contextlib.suppress(Exception):
                self.stop()
        else:
            self.ensure_running()
        shutil.rmtree(self.work_dir, ignore_errors=True)


# One scenario's running system


@dataclass
class Running:
    cluster: Cluster
    http: httpx.AsyncClient
    key: str  # an admin key (admin includes send)
    template_id: str
    database_url: str


@contextlib.asynccontextmanager
async def running(
    env: dict[str, str], database_url: str, log_dir: Path, *, workers: int = 2
) -> AsyncIterator[Running]:
    """`mailer api` and `workers` x `mailer worker` on `env`; all stopped on the way out."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with Cluster(env, log_dir) as cluster:
        key = await make_key(database_url, admin=True)
        api = cluster.start_api()
        for _ in range(workers):
            cluster.start_worker()
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
            template_id = await create_template(http, key)
            yield Running(cluster, http, key, template_id, database_url)
