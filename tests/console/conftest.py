"""Browser tests of the console: the real API as a process (with its worker), Debian's
Chromium driven by Playwright. Playwright downloads nothing: it launches /usr/bin/chromium.

SQLite (default): one `mailer dev` process (API + embedded worker, seeded on first start).
MAILER_TEST_BACKEND=postgres: `mailer api` and `mailer worker` on PostgreSQL + Redis.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.auth import service as keys
from mailer.config import Settings
from mailer.db import create_engine, create_sessionmaker, session_scope
from tests.fixtures import database
from tests.fixtures.processes import MailerProcess, env_for, start_worker
from tests.fixtures.webhook_receiver import Receiver

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_db(settings: Settings, work: Any) -> Any:
    """Run `await work(session)` in a transaction of its own, outside the server."""
    engine = create_engine(settings, pool_size=1)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()


async def make_key(settings: Settings, name: str, *, admin: bool) -> str:
    async def work(session: Any) -> str:
        created = await keys.create_key(session, name, admin=admin)
        return created.secret

    result: str = await run_db(settings, work)
    return result


@dataclass
class Server:
    url: str
    settings: Settings
    seeded_key: str | None
    processes: list[MailerProcess]

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )


@contextmanager
def _serve(settings_factory: Any, tmp_path: Path, **env_extra: Any) -> Iterator[Server]:
    port = _free_port()
    settings: Settings = settings_factory(
        public_url=f"http://127.0.0.1:{port}", reconcile_interval=0.5
    )
    env = env_for(settings, HOST="127.0.0.1", PORT=port, RECONCILE_INTERVAL=0.5, **env_extra)
    processes: list[MailerProcess] = []
    seeded: str | None = None
    try:
        if database.BACKEND == "postgres":
            api = MailerProcess(["api"], env, tmp_path / "api.log")
            processes.append(api)
            api.wait_for_log("api_started", timeout=60)
            processes.append(start_worker(env, tmp_path / "worker.log"))
        else:
            dev = MailerProcess(["dev"], env, tmp_path / "dev.log")
            processes.append(dev)
            dev.wait_for_log("api_started", timeout=60)
            found = re.search(r"admin key \(shown only once.*\n\s+([0-9a-f]{64})", dev.log())
            seeded = found.group(1) if found else None
        yield Server(f"http://127.0.0.1:{port}", settings, seeded, processes)
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
def server(settings_factory: Any, tmp_path: Path) -> Iterator[Server]:
    with _serve(settings_factory, tmp_path) as running:
        yield running


@pytest.fixture
def webhook_server(settings_factory: Any, tmp_path: Path) -> Iterator[Server]:
    """The SSRF guard lifted (the receiver is on 127.0.0.1), the outbox polled often."""
    with _serve(
        settings_factory, tmp_path, WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_POLL_INTERVAL=0.2
    ) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real webhook receiver on 127.0.0.1 (answers 200 unless told otherwise)."""
    started = await Receiver().start()
    yield started
    await started.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    yield opened
    await context.close()


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Any, server: Server, key: str) -> None:
    await page.goto(f"{server.url}/console/")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{server.url}/console/")
