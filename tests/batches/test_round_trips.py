"""Round trips to PostgreSQL and Redis on the API's hot path, counted on the wire (a TCP
proxy in front of each server, tests/fixtures/round_trips.py). Counts, not timings: what a
request waits for. The targets (issue 18, docs/performance.md): a single-recipient
POST /batches at most 3 database round trips and 1 Redis round trip; a GET one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch
from tests.fixtures.round_trips import CountingProxy, counting_proxy

pytestmark = [pytest.mark.postgres_only]


@dataclass
class Wired:
    client: ApiClient
    key: str
    template_id: str
    db: CountingProxy
    redis: CountingProxy


@pytest.fixture
async def wired(settings_factory: Any, database_url: str, redis_url: str) -> AsyncIterator[Wired]:
    async with (
        counting_proxy(database_url, 5432) as db,
        counting_proxy(redis_url, 6379) as rd,
    ):
        settings = settings_factory(database_url=db.url(database_url), redis_url=rd.url(redis_url))
        async with api_client(settings) as client:
            key = await client.make_key("round-trips")
            template_id = await create_template(client.http, key)
            for _ in range(200):  # the key cache listens once its connection is up
                if client.state.key_cache.enabled:
                    break
                await asyncio.sleep(0.05)
            assert client.state.key_cache.enabled
            # No periodic write of key usage in the middle of a count.
            await client.state.usage.stop()
            yield Wired(client, key, template_id, db, rd)


async def _post(w: Wired, i: int, **extra: Any) -> dict[str, Any]:
    response = await post_batch(
        w.client.http, w.key, w.template_id, make_recipients(1, prefix=f"rt{i}-"), **extra
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_single_recipient_post_is_at_most_three_db_and_one_redis_round_trip(
    wired: Wired,
) -> None:
    for i in range(3):  # warm: connections, prepared statements, the key cache, scripts
        await _post(wired, i)
    with wired.db.counting() as db, wired.redis.counting() as rd:
        created = await _post(wired, 99)
    assert created["queued"] == 1
    assert rd.round_trips == 1, rd.round_trips  # the enqueue, after the commit
    assert db.round_trips <= 3, db.round_trips
    # The job is there: the Redis round trip was the enqueue, not something else.
    assert await wired.client.state.queue.has_pending_for(created["id"])


async def test_a_suppressed_single_recipient_costs_no_more(wired: Wired) -> None:
    from mailer.db import session_scope
    from mailer.suppressions import service as suppressions

    async with session_scope(wired.client.state.sessionmaker) as session:
        await suppressions.add(session, ["rt-held@example.com"], reason="MANUAL")
    for i in range(3):  # warm, as above
        await _post(wired, i)
    body = {"email": "rt-held@example.com", "variables": {"name": "N", "code": "c"}}
    with wired.db.counting() as db, wired.redis.counting() as rd:
        response = await post_batch(wired.client.http, wired.key, wired.template_id, [body])
    assert response.status_code == 201, response.text
    assert response.json()["suppressed"] == 1
    assert response.json()["status"] == "COMPLETED"
    assert db.round_trips <= 3, db.round_trips
    assert rd.round_trips == 0, rd.round_trips  # nothing to send, nothing enqueued


async def test_reading_a_batch_is_one_db_round_trip_and_no_redis(wired: Wired) -> None:
    created = await _post(wired, 1)
    path = f"/api/v1/batches/{created['id']}"
    for _ in range(2):
        assert (await wired.client.http.get(path, headers=auth(wired.key))).status_code == 200
    with wired.db.counting() as db, wired.redis.counting() as rd:
        response = await wired.client.http.get(path, headers=auth(wired.key))
    assert response.status_code == 200
    assert response.json()["counts"]["PENDING"] == 1
    assert db.round_trips == 1, db.round_trips
    assert rd.round_trips == 0


async def test_reading_events_round_trips(wired: Wired) -> None:
    created = await _post(wired, 1)
    path = f"/api/v1/batches/{created['id']}/events"
    for _ in range(2):
        assert (await wired.client.http.get(path, headers=auth(wired.key))).status_code == 200
    with wired.db.counting() as db:
        response = await wired.client.http.get(path, headers=auth(wired.key))
    assert response.status_code == 200
    assert response.json()["total"] == 1
    assert db.round_trips == 1, db.round_trips


async def _send_email(w: Wired, i: int, **fields: Any) -> dict[str, Any]:
    body = {"to": f"rt-email{i}@example.com", **fields}
    response = await w.client.http.post("/api/v1/emails", json=body, headers=auth(w.key))
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({"template": True}, id="template"),
        pytest.param({"subject": "Hi {{name}}", "html": "<p>Hi {{name}}</p>"}, id="inline"),
    ],
)
async def test_sending_one_email_is_at_most_three_db_and_one_redis_round_trip(
    wired: Wired, content: dict[str, Any]
) -> None:
    fields: dict[str, Any] = {"variables": {"name": "N", "code": "c"}}
    if content.pop("template", False):
        fields["template_id"] = wired.template_id
    fields.update(content)
    for i in range(3):  # warm
        await _send_email(wired, i, **fields)
    with wired.db.counting() as db, wired.redis.counting() as rd:
        created = await _send_email(wired, 99, **fields)
    assert created["data"][0]["status"] == "QUEUED"
    assert rd.round_trips == 1, rd.round_trips
    assert db.round_trips <= 3, db.round_trips
    message = await wired.client.http.get(
        f"/api/v1/emails/{created['data'][0]['id']}", headers=auth(wired.key)
    )
    assert message.status_code == 200, message.text
    assert await wired.client.state.queue.has_pending_for(message.json()["batchId"])
