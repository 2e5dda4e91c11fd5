"""Pooled connections the database dropped: idle ones are checked before use, busy ones
cost one failed request, after which the pool starts afresh."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from mailer.db import create_engine
from mailer.db import engine as db_engine
from tests.fixtures.client import ApiClient, auth

pytestmark = pytest.mark.postgres_only

TEMPLATES = "/api/v1/templates"


async def drop_connections(settings: Any, *, but: str | None = None) -> int:
    """What a database restart does to every connection the API holds (`but` those whose
    last statement is LIKE it)."""
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND (CAST(:but AS text) IS NULL OR query NOT LIKE :but)"
                ),
                {"but": but},
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def test_idle_connections_are_checked_before_use(
    client: ApiClient, send_key: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await client.http.get(TEMPLATES, headers=auth(send_key))).status_code == 200
    assert await drop_connections(settings) >= 1
    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_SECONDS", 0.0)
    response = await client.http.get(TEMPLATES, headers=auth(send_key))
    assert response.status_code == 200, response.text
    created = await client.http.post(
        "/api/v1/admin/keys", json={"name": "x"}, headers=auth(await client.make_key(admin=True))
    )
    assert created.status_code == 201, created.text


async def test_a_connection_in_steady_use_fails_once_then_the_pool_recovers(
    client: ApiClient, send_key: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_SECONDS", 3600.0)
    assert (await client.http.get(TEMPLATES, headers=auth(send_key))).status_code == 200
    assert await drop_connections(settings) >= 1
    # What a client of the server sees (the in-process transport would re-raise instead).
    transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        first = await http.get(TEMPLATES, headers=auth(send_key))
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "unavailable"
    for _ in range(3):
        assert (await client.http.get(TEMPLATES, headers=auth(send_key))).status_code == 200
