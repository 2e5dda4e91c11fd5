"""Authenticated keys are cached per process; every revocation still counts on the next request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text

from mailer.auth import service as keys
from mailer.auth.cache import CHANNEL
from mailer.auth.keys import hash_key
from mailer.db import create_engine, create_sessionmaker, session_scope
from tests.conftest import BACKEND
from tests.fixtures.client import ApiClient, auth

TEMPLATES = "/api/v1/templates"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def status(client: ApiClient, key: str) -> int:
    return (await client.http.get(TEMPLATES, headers=auth(key))).status_code


async def sql(client: ApiClient, statement: str, **params: Any) -> None:
    """A change made behind the API's back, as another process would."""
    async with session_scope(client.state.sessionmaker) as session:
        await session.execute(text(statement), params)


async def cache_on(client: ApiClient) -> bool:
    return client.state.key_cache.enabled


@pytest.mark.postgres_only
async def test_a_known_key_is_served_from_memory_until_news_arrives(client: ApiClient) -> None:
    await eventually(lambda: cache_on(client))
    key = await client.make_key("cached")
    assert await status(client, key) == 200
    assert client.state.key_cache.get(hash_key(key)) is not None
    # Revoked without telling anyone: the cache answers, so the database was not read.
    await sql(client, "UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h", h=hash_key(key))
    assert await status(client, key) == 200
    # The announcement (what every revocation sends) empties every process's cache.
    await sql(client, "SELECT pg_notify(:c, 'x')", c=CHANNEL)
    await eventually(lambda: _is(status(client, key), 401))


@pytest.mark.postgres_only
async def test_a_revocation_by_another_process_counts_at_once(
    client: ApiClient, settings: Any
) -> None:
    await eventually(lambda: cache_on(client))
    key = await client.make_key("elsewhere")
    assert await status(client, key) == 200
    key_id = client.state.key_cache.get(hash_key(key))
    assert key_id is not None
    # What `mailer keys revoke` does, from an engine of its own.
    engine = create_engine(settings, pool_size=1)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            await keys.revoke_key(session, key_id.key_id)
    finally:
        await engine.dispose()
    await eventually(lambda: _is(status(client, key), 401), timeout=2.0)


@pytest.mark.postgres_only
async def test_no_cache_while_the_listen_connection_is_down(client: ApiClient) -> None:
    await eventually(lambda: cache_on(client))
    key = await client.make_key("unheard")
    assert await status(client, key) == 200
    await sql(
        client,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    await eventually(lambda: _not(cache_on(client)))
    # Revoked with no announcement: with nobody listening, the next request reads the row.
    await sql(client, "UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h", h=hash_key(key))
    assert await status(client, key) == 401
    # The connection comes back by itself, and the cache with it.
    await eventually(lambda: cache_on(client))
    other = await client.make_key("after")
    assert await status(client, other) == 200
    assert client.state.key_cache.get(hash_key(other)) is not None


async def test_revoking_through_the_api_counts_on_the_next_request(
    client: ApiClient, admin_key: str
) -> None:
    if BACKEND == "postgres":
        await eventually(lambda: cache_on(client))
    created = await client.http.post(
        "/api/v1/admin/keys", json={"name": "soon"}, headers=auth(admin_key)
    )
    key, key_id = created.json()["key"], created.json()["id"]
    assert await status(client, key) == 200
    revoke = await client.http.post(f"/api/v1/admin/keys/{key_id}/revoke", headers=auth(admin_key))
    assert revoke.status_code == 200
    assert await status(client, key) == 401


async def test_sqlite_never_caches(client: ApiClient) -> None:
    if BACKEND == "postgres":
        pytest.skip("SQLite only")
    key = await client.make_key("plain")
    assert await status(client, key) == 200
    assert not client.state.key_cache.enabled
    await sql(
        client,
        "UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE key_hash = :h",
        h=hash_key(key),
    )
    assert await status(client, key) == 401


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _not(value: Awaitable[bool]) -> bool:
    return not await value
