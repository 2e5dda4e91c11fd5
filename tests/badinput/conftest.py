"""A whole `mailer api` process on a database of this module's own, for tools that speak
HTTP (schemathesis) and for requests only a real server sees (raw sockets)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from mailer.config import load_settings
from tests.conftest import REDIS_BASE, REDIS_DB, TEST_UNSUBSCRIBE_SECRET
from tests.faults.harness import ApiProcess, make_key
from tests.fixtures import database
from tests.fixtures.processes import env_for


@dataclass(frozen=True)
class LiveApi:
    url: str
    admin: str
    send: str
    process: ApiProcess


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    directory = tmp_path_factory.mktemp("live-api")
    values: dict[str, object] = {
        "_env_file": None,
        "app_env": "test",
        "outbox_dir": directory / "outbox",
        "unsubscribe_secret": TEST_UNSUBSCRIBE_SECRET,
        "max_body_bytes": 1024 * 1024,
    }
    pg_name = None
    if database.BACKEND == "postgres":
        pg_name = f"mailer_badinput_{os.getpid()}"
        values["database_url"] = database.create_pg_database(pg_name)
        values["redis_url"] = f"{REDIS_BASE}/{REDIS_DB}"
        redis.Redis.from_url(str(values["redis_url"])).flushdb()
    else:
        values["database_url"] = f"sqlite:///{database.make_sqlite_template(directory)}"
    settings = load_settings(**values)
    admin = asyncio.run(make_key(settings.database_url, admin=True))
    send = asyncio.run(make_key(settings.database_url))
    env = env_for(settings, API_RATE_LIMIT=0, MAX_BODY_BYTES=settings.max_body_bytes)
    api = ApiProcess(env, Path(directory) / "api.log")
    try:
        api.wait_ready()
        yield LiveApi(api.url, admin, send, api)
    finally:
        api.stop()
        if pg_name is not None:
            database.drop_pg_database(pg_name)
