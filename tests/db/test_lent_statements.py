"""A small POST on PostgreSQL runs its statements on a connection of the API's DriverPool
(`pg.single_statement_unit`): none of the engine's connections is taken, the pooled one
goes back when the request ends, whether it succeeded or failed, and the rare ORM
statement of such a request (an expired Idempotency-Key) commits on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from mailer.batches import repository as batches_repository
from mailer.db import session_scope
from mailer.models import Batch
from mailer.models.base import utcnow
from mailer.webhook_endpoints import outbox
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch

pytestmark = [pytest.mark.postgres_only]


@contextmanager
def engine_checkouts(client: ApiClient) -> Iterator[list[object]]:
    """The engine's pool checkouts while the block runs."""
    seen: list[object] = []
    pool = client.state.engine.sync_engine.pool

    def checkout(*_: Any) -> None:
        seen.append(object())

    event.listen(pool, "checkout", checkout)
    try:
        yield seen
    finally:
        event.remove(pool, "checkout", checkout)


def idle_and_size(client: ApiClient) -> tuple[int, int]:
    pool = client.state.driver_pool
    assert pool is not None
    return pool._pool.get_idle_size(), pool._pool.get_size()


@pytest.fixture(autouse=True)
def steady_endpoint_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # The enabled webhook endpoints are read again every CACHE_SECONDS (in a transaction
    # of the request's own): not in the middle of a count.
    monkeypatch.setattr(outbox, "CACHE_SECONDS", 3600.0)


async def test_small_posts_take_no_connection_of_the_engine(
    client: ApiClient, send_key: str
) -> None:
    template_id = await create_template(client.http, send_key)
    variables = {"name": "N", "code": "c"}
    email = {"to": "x@example.com", "template_id": template_id, "variables": variables}
    warm = await post_batch(client.http, send_key, template_id, make_recipients(1))
    assert warm.status_code == 201, warm.text
    with engine_checkouts(client) as checkouts:
        created = await post_batch(client.http, send_key, template_id, make_recipients(1))
        replayed = [
            await post_batch(
                client.http,
                send_key,
                template_id,
                make_recipients(1),
                headers={"Idempotency-Key": "k"},
            )
            for _ in range(2)
        ]
        sent = await client.http.post("/api/v1/emails", json=email, headers=auth(send_key))
    assert created.status_code == 201, created.text
    assert [r.status_code for r in replayed] == [201, 201]
    assert replayed[1].headers.get("Idempotent-Replayed") == "true"
    assert replayed[1].json() == replayed[0].json()
    assert sent.status_code == 202, sent.text
    assert checkouts == []
    idle, size = idle_and_size(client)
    assert size >= 1 and idle == size  # every pooled connection given back


async def test_failing_posts_give_their_connection_back(settings_factory: Any) -> None:
    async with api_client(settings_factory(db_pool_size=1)) as client:
        key = await client.make_key("lent")
        template_id = await create_template(client.http, key)
        for _ in range(3):
            # Refused after the context read ran on the pooled connection.
            missing = await post_batch(client.http, key, "no-such-template", make_recipients(1))
            assert missing.status_code == 422, missing.text
            unknown = await client.http.post(
                "/api/v1/emails",
                json={"to": "x@example.com", "template_id": "no-such-template"},
                headers=auth(key),
            )
            assert unknown.status_code == 422, unknown.text
        # One pooled connection in all: a leaked one would leave this waiting.
        done = await asyncio.wait_for(
            post_batch(client.http, key, template_id, make_recipients(1)), timeout=10
        )
        assert done.status_code == 201, done.text
        assert idle_and_size(client) == (1, 1)


async def test_an_expired_idempotency_key_is_forgotten_and_taken_again(
    client: ApiClient, send_key: str
) -> None:
    template_id = await create_template(client.http, send_key)
    old_key = {"Idempotency-Key": "old"}
    first = await post_batch(
        client.http, send_key, template_id, make_recipients(1), headers=old_key
    )
    assert first.status_code == 201, first.text
    long_ago = utcnow() - batches_repository.IDEMPOTENCY_WINDOW - timedelta(minutes=1)
    async with session_scope(client.state.sessionmaker) as session:
        await session.execute(
            update(Batch).where(Batch.id == first.json()["id"]).values(created_at=long_ago)
        )
    # The key's expiry (an ORM update) must commit on its own before the insert naming the
    # key again runs on the lent connection: in a transaction of its own connection it would
    # hold the unique index, and the insert would wait for it forever.
    again = await asyncio.wait_for(
        post_batch(
            client.http, send_key, template_id, make_recipients(1, prefix="n"), headers=old_key
        ),
        timeout=10,
    )
    assert again.status_code == 201, again.text
    assert again.headers.get("Idempotent-Replayed") is None
    assert again.json()["id"] != first.json()["id"]
    async with session_scope(client.state.sessionmaker) as session:
        old = await session.get(Batch, first.json()["id"])
        new = await session.get(Batch, again.json()["id"])
    assert old is not None and old.idempotency_key is None
    assert new is not None and new.idempotency_key == "old"
