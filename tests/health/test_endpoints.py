"""Liveness and readiness: /health, /ready with per-check detail, and an app that starts
even when its database is unreachable or not migrated."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from mailer.app import create_app
from mailer.migrate import head_revision
from tests.fixtures.client import api_client, auth
from tests.fixtures.errors import assert_error

CLOSED_PORT_DB = "postgresql://postgres@127.0.0.1:1/mailer"


async def test_health(client: Any) -> None:
    response = await client.http.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_everything_is_up(client: Any) -> None:
    response = await client.http.get("/api/v1/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True, "revision": head_revision()}
    assert body["checks"]["queue"]["ok"] is True


async def test_ready_is_503_when_migrations_are_not_at_head(
    settings_factory: Any, tmp_path: Path
) -> None:
    fresh = tmp_path / "never-migrated.db"
    async with api_client(settings_factory(database_url=f"sqlite:///{fresh}")) as c:
        assert (await c.http.get("/api/v1/health")).status_code == 200
        response = await c.http.get("/api/v1/ready")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "not_ready"
        database = body["checks"]["database"]
        assert database["ok"] is False
        assert "migrations not at head" in database["error"]
        assert head_revision() in database["error"]
        assert body["checks"]["queue"]["ok"] is True


async def test_app_starts_and_is_not_ready_when_the_database_is_unreachable(
    settings_factory: Any,
) -> None:
    async with api_client(settings_factory(database_url=CLOSED_PORT_DB)) as c:
        assert (await c.http.get("/api/v1/health")).status_code == 200
        response = await c.http.get("/api/v1/ready")
        assert response.status_code == 503, response.text
        database = response.json()["checks"]["database"]
        assert database["ok"] is False
        assert "database unreachable" in database["error"]


async def test_authenticated_request_with_database_down_is_503(settings_factory: Any) -> None:
    """Never a 500 for an outage: the client is told to retry."""
    app = create_app(settings_factory(database_url=CLOSED_PORT_DB))
    from asgi_lifespan import LifespanManager

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/api/v1/templates", headers=auth("a" * 64))
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"].isdigit()


async def test_ready_is_503_when_the_queue_is_unreachable(settings_factory: Any) -> None:
    async with api_client(settings_factory(redis_url="redis://127.0.0.1:1/0")) as c:
        response = await c.http.get("/api/v1/ready")
        assert response.status_code == 503, response.text
        checks = response.json()["checks"]
        assert checks["queue"]["ok"] is False
        # Unreachable, or (bullmq's client retries connecting) no answer in time.
        assert re.search(r"queue unreachable|no answer within", checks["queue"]["error"])
        assert checks["database"]["ok"] is True
