"""`Reads`, the hot reads' unit of work: on PostgreSQL a connection of the driver pool without
a session (statements commit on their own, the connection goes back to the pool, one that
may be broken does not, a restart costs one failed read); on SQLite a read session opened
on first use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.db import create_read_sessionmaker
from mailer.db import engine as db_engine
from mailer.db.pg import DriverPool
from mailer.db.reads import Reads
from tests.db.test_reconnect import drop_connections
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch


@asynccontextmanager
async def _driver_pool(settings: Any, size: int = 2) -> AsyncIterator[DriverPool]:
    engine = db_engine.create_engine(settings, pool_size=1)
    pool = DriverPool(engine, size)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()
        await engine.dispose()


async def test_without_a_driver_pool_reads_go_through_a_session_opened_when_asked(
    engine: AsyncEngine,
) -> None:
    async with Reads(None, create_read_sessionmaker(engine)) as reads:
        assert reads.driver is None
        session = await reads.session()
        assert await reads.session() is session
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1


@pytest.mark.postgres_only
async def test_a_read_runs_on_a_pooled_connection_outside_any_transaction(
    settings: Any, engine: AsyncEngine
) -> None:
    async with _driver_pool(settings) as pool:
        async with Reads(pool, create_read_sessionmaker(engine)) as reads:
            assert reads.driver is not None
            assert not reads.driver.is_in_transaction()
            assert await reads.driver.fetchval("SELECT 1") == 1
            session = await reads.session()  # the portable path is there too
            assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
        async with Reads(pool, None) as reads:
            name = await reads.driver.fetchval("SELECT current_setting('application_name')")
        assert name == "mailer"


async def _read_slowly(pool: DriverPool) -> None:
    async with pool.connection() as driver:
        await driver.fetchval("SELECT pg_sleep(5)")


async def _backend_pid(pool: DriverPool) -> int:
    async with pool.connection() as driver:
        return int(await driver.fetchval("SELECT pg_backend_pid()"))


@pytest.mark.postgres_only
async def test_an_error_postgresql_reports_keeps_the_connection_anything_else_drops_it(
    settings: Any,
) -> None:
    async with _driver_pool(settings, size=1) as pool:
        first = await _backend_pid(pool)
        # A statement PostgreSQL refused: the connection is fine and goes back.
        with pytest.raises(asyncpg.PostgresError):
            async with pool.connection() as driver:
                await driver.fetchval("SELECT 1/0")
        assert await _backend_pid(pool) == first

        # The request's task cancelled while its statement runs (a client that went away):
        # the connection's state is unknown, so it is closed rather than reused.
        task = asyncio.ensure_future(_read_slowly(pool))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _backend_pid(pool) != first


@pytest.mark.postgres_only
async def test_refusals_between_statements_keep_the_pooled_connection(
    settings_factory: Any,
) -> None:
    """A 404 or a 422 raised by the application while it holds a pooled connection (a
    missing batch, a POST refused after its context read) leaves the connection as it was:
    it goes back to the pool, rather than being closed with every other one."""
    async with api_client(settings_factory(db_pool_size=1)) as client:
        key = await client.make_key("refusals")
        template_id = await create_template(client.http, key)
        pool = client.state.driver_pool
        assert pool is not None
        first = await _backend_pid(pool)
        missing = await client.http.get("/api/v1/batches/nothing-here", headers=auth(key))
        assert missing.status_code == 404
        refused = await post_batch(client.http, key, template_id, [{"email": "a@b.example"}])
        assert refused.status_code == 422, refused.text  # the template's variables missing
        assert await _backend_pid(pool) == first


@pytest.mark.postgres_only
async def test_after_a_quiet_spell_a_dropped_connection_is_replaced_before_use(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _driver_pool(settings, size=1) as pool:
        first = await _backend_pid(pool)
        assert await drop_connections(settings) >= 1
        monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_SECONDS", 0.0)
        assert await _backend_pid(pool) != first


@pytest.mark.postgres_only
async def test_a_statement_cut_off_by_the_server_fails_and_the_next_read_reconnects(
    settings: Any,
) -> None:
    async with _driver_pool(settings, size=1) as pool:
        first = await _backend_pid(pool)

        task = asyncio.ensure_future(_read_slowly(pool))
        await asyncio.sleep(0.3)
        assert await drop_connections(settings) >= 1
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            await task
        assert await _backend_pid(pool) != first


@pytest.mark.postgres_only
async def test_after_a_database_restart_hot_reads_fail_at_most_once_then_all_recover(
    client: ApiClient, send_key: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_SECONDS", 3600.0)
    template_id = await create_template(client.http, send_key)
    response = await post_batch(client.http, send_key, template_id, make_recipients(2))
    batch_id = response.json()["id"]
    page = await client.http.get(f"/api/v1/emails?batch_id={batch_id}", headers=auth(send_key))
    email_id = page.json()["data"][0]["id"]
    paths = [
        f"/api/v1/batches/{batch_id}",
        f"/api/v1/batches/{batch_id}/events",
        f"/api/v1/emails/{email_id}",
    ]
    # Several pooled connections, all of which the restart drops.
    found = await asyncio.gather(*(client.http.get(p, headers=auth(send_key)) for p in paths * 3))
    assert {r.status_code for r in found} == {200}
    # The driver pool's connections; not the key cache's LISTEN connection, which the ORM
    # would then have to replace on the key lookup.
    assert await drop_connections(settings, but="LISTEN%") >= 2
    # What a client of the server sees (the in-process transport would re-raise instead).
    transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        answers = [await http.get(path, headers=auth(send_key)) for path in paths * 3]
    failed = [a for a in answers if a.status_code != 200]
    # asyncpg replaces a connection it saw closed; one it had not seen closed yet fails
    # its read (503, to retry), and the pool then replaces every connection.
    assert len(failed) <= 1, [a.text for a in failed]
    for answer in failed:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "unavailable"
