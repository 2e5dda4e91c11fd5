"""Shared fixtures. Backend: MAILER_TEST_BACKEND=sqlite (default) or postgres.

With postgres the queue is BullMQ on the machine's Redis (a db index of the tests' own);
with sqlite it is the in-process queue. Tests that only make sense on one backend use the
markers postgres_only / redis_only.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mailer.config import Settings, load_settings
from mailer.db import create_engine, create_sessionmaker
from tests.fixtures import database, processes

BACKEND = database.BACKEND
REDIS_BASE = os.environ.get("MAILER_TEST_REDIS", "redis://127.0.0.1:6379")
# A Redis database index (1..15) per test process, so concurrent runs rarely meet.
REDIS_DB = int(os.environ.get("MAILER_TEST_REDIS_DB", 1 + os.getpid() % 15))
TEST_UNSUBSCRIBE_SECRET = "test-unsubscribe-secret-0123456789"

# Real peers shared by every test package: aiosmtpd SMTP server, SES endpoints, moto.
pytest_plugins = ["tests.fixtures.smtp_server", "tests.fixtures.ses_server"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if BACKEND != "postgres" and item.get_closest_marker("postgres_only"):
            item.add_marker(pytest.mark.skip(reason="PostgreSQL backend only"))
        if BACKEND != "postgres" and item.get_closest_marker("redis_only"):
            item.add_marker(pytest.mark.skip(reason="Redis backend only"))


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_session() -> Iterator[None]:
    yield
    processes.stop_leftovers()


@pytest.fixture(scope="session")
def _database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | Path]:
    if BACKEND == "postgres":
        database.ensure_postgres_running()
        name = database.pg_database_name()
        yield database.create_pg_database(name)
        database.drop_pg_database(name)
        return
    yield database.make_sqlite_template(tmp_path_factory.mktemp("db"))


@pytest.fixture
async def database_url(_database_template: str | Path, tmp_path: Path) -> str:
    if BACKEND == "postgres":
        assert isinstance(_database_template, str)
        await database.truncate_pg(_database_template)
        return _database_template
    assert isinstance(_database_template, Path)
    return database.copy_sqlite(_database_template, tmp_path / "mailer.db")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database index of this test run's own, flushed before and after."""
    url = f"{REDIS_BASE}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def settings_factory(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Build Settings for a test; keyword overrides win. Never reads the developer's .env."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "_env_file": None,
            "app_env": "test",
            "database_url": database_url,
            "outbox_dir": tmp_path / "outbox",
            "log_format": "json",
            "log_level": "warning",
            "unsubscribe_secret": TEST_UNSUBSCRIBE_SECRET,
            "public_url": "http://127.0.0.1:3000",
            "job_backoff_delay": 50,
            "reconcile_interval": 1.0,
            "api_rate_limit": 0,
        }
        if BACKEND == "postgres" and "redis_url" not in overrides:
            values["redis_url"] = request.getfixturevalue("redis_url")
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory()
    return s


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(settings, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Any]:
    from tests.fixtures.client import api_client

    async with api_client(settings) as c:
        yield c


@pytest.fixture
async def send_key(client: Any) -> str:
    key: str = await client.make_key("send-key")
    return key


@pytest.fixture
async def admin_key(client: Any) -> str:
    key: str = await client.make_key("admin-key", admin=True)
    return key


@pytest.fixture
def client_factory(settings_factory: Any) -> Any:
    """`async with client_factory(**settings_overrides) as c:` an API client on those settings."""
    from tests.fixtures.client import api_client

    def make(**overrides: Any) -> Any:
        return api_client(settings_factory(**overrides))

    return make
