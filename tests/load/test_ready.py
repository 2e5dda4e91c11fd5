"""Found by the load run: /ready answered 503 under load because its informational
"sending" check (the reputation pause) did not answer within 5 s, taking a busy but healthy
API out of service. Only the database and the queue decide readiness."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mailer.config import normalize_database_url
from tests.fixtures.client import ApiClient

pytestmark = [pytest.mark.postgres_only]


async def test_ready_stays_200_when_only_the_sending_check_is_slow(client: ApiClient) -> None:
    # Another transaction holds system_state (where the pause lives) exclusively: reading
    # it blocks, while the database check (SELECT 1, the migration revision) still answers.
    url = normalize_database_url(client.state.settings.database_url)
    blocker = create_async_engine(url)
    try:
        async with blocker.connect() as conn:
            await conn.execute(text("BEGIN"))
            await conn.execute(text("LOCK TABLE system_state IN ACCESS EXCLUSIVE MODE"))
            response = await client.http.get("/api/v1/ready")
            await conn.execute(text("ROLLBACK"))
    finally:
        await blocker.dispose()
    body: dict[str, Any] = response.json()
    assert "no answer" in str(body["checks"]["sending"])  # the slow check really was slow
    assert response.status_code == 200, body
    assert body["checks"]["database"]["ok"] and body["checks"]["queue"]["ok"]
