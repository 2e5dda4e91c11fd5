"""`Reads`, the hot reads' unit of work: on PostgreSQL a pooled asyncpg connection without a
session (statements commit on their own, the connection goes back to the pool, one that
may be broken does not); on SQLite a read session opened on first use."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.db import create_read_sessionmaker
from mailer.db import engine as db_engine
from mailer.db.reads import Reads
from tests.db.test_reconnect import drop_connections
from tests.fixtures.client import ApiClient, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch


def _reads(engine: AsyncEngine) -> Reads:
    return Reads(engine, create_read_sessionmaker(engine))


async def test_on_sqlite_reads_go_through_a_session_opened_when_asked(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("the PostgreSQL side is tested below")
    async with _reads(engine) as reads:
        assert reads.driver is None
        session = await reads.session()
        assert await reads.session() is session
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    assert session.get_bind() is not None


@pytest.mark.postgres_only
async def test_a_read_runs_on_a_pooled_connection_outside_any_transaction(
    engine: AsyncEngine,
) -> None:
    pool = engine.sync_engine.pool
    async with _reads(engine) as reads:
        assert reads.driver is not None
        assert not reads.driver.is_in_transaction()
        assert await reads.driver.fetchval("SELECT 1") == 1
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
        session = await reads.session()  # the portable path is there too
        assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


async def _backend_pid(engine: AsyncEngine) -> int:
    async with _reads(engine) as reads:
        return int(await reads.driver.fetchval("SELECT pg_backend_pid()"))


@pytest.mark.postgres_only
async def test_an_error_postgresql_reports_keeps_the_connection_anything_else_drops_it(
    settings: Any,
) -> None:
    engine = db_engine.create_engine(settings, pool_size=1)
    try:
        first = await _backend_pid(engine)
        # A statement PostgreSQL refused: the connection is fine and goes back.
        with pytest.raises(asyncpg.PostgresError):
            async with _reads(engine) as reads:
                await reads.driver.fetchval("SELECT 1/0")
        assert await _backend_pid(engine) == first

        # The request's task cancelled while its statement runs (a client that went away):
        # the connection's state is unknown, so it is closed rather than reused.
        async def read_slowly() -> None:
            async with _reads(engine) as reads:
                await reads.driver.fetchval("SELECT pg_sleep(5)")

        task = asyncio.ensure_future(read_slowly())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _backend_pid(engine) != first
    finally:
        await engine.dispose()


@pytest.mark.postgres_only
async def test_after_a_database_restart_a_hot_read_fails_once_then_all_recover(
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
    # The pool's connections; not the key cache's LISTEN connection, which the ORM would
    # then have to replace on the key lookup (and so renew the pool before a hot read).
    assert await drop_connections(settings, but="LISTEN%") >= 2
    transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        first = await http.get(paths[0], headers=auth(send_key))
        assert first.status_code == 503, first.text
        assert first.json()["error"]["code"] == "unavailable"
        assert first.headers["retry-after"] == "5"
        for path in paths * 2:
            again = await http.get(path, headers=auth(send_key))
            assert again.status_code == 200, (path, again.text)
