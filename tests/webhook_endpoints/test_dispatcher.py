"""The dispatcher on its own: SSRF refusal at connect time, secret rotation overlap,
replays, leases of a dead worker, the retry schedule and the 5-day disable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from mailer.config import Settings
from mailer.db import session_scope
from mailer.models import WebhookDelivery, WebhookEndpoint
from mailer.models.base import utcnow
from mailer.webhook_endpoints import catalog, outbox, service
from mailer.webhook_endpoints.dispatcher import Dispatcher, next_delay
from mailer.webhook_endpoints.sender import retry_after_seconds
from tests.fixtures.webhook_receiver import Receiver

Maker = async_sessionmaker[AsyncSession]


async def _endpoint(maker: Maker, settings: Settings, url: str) -> WebhookEndpoint:
    allow = settings.model_copy(update={"webhook_allow_private": True})
    async with session_scope(maker) as session:
        return await service.create(session, allow, url=url)


async def _event(maker: Maker, reason: str = "test") -> None:
    async with session_scope(maker) as session:
        await outbox.add_event(session, catalog.SENDING_PAUSED, {"reason": reason, "by": "t"})


async def _deliveries(maker: Maker) -> list[WebhookDelivery]:
    async with session_scope(maker) as session:
        return list(await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


async def _until(maker: Maker, check: Any, timeout: float = 30.0) -> list[WebhookDelivery]:
    rows: list[WebhookDelivery] = []
    for _ in range(int(timeout / 0.05)):
        rows = await _deliveries(maker)
        if check(rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries never matched: {[(r.state, r.error) for r in rows]}")


@asynccontextmanager
async def running(settings: Settings, maker: Maker) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(settings, maker)
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_ssrf_refused_at_connect(
    settings_factory: Any, sessionmaker: Maker, receiver: Receiver, host: str
) -> None:
    """Saved while private addresses were allowed (or resolving elsewhere, as after a DNS
    rebinding); the dispatcher with the guard on refuses to connect."""
    guarded = settings_factory(webhook_retry_delays="0.05", webhook_poll_interval=0.05)
    assert guarded.webhook_allow_private is False
    await _endpoint(sessionmaker, guarded, receiver.url.replace("127.0.0.1", host))
    await _event(sessionmaker)
    async with running(guarded, sessionmaker):
        rows = await _until(sessionmaker, lambda rows: rows and rows[0].state == "FAILED")
    assert "SSRF guard" in (rows[0].error or "")
    assert rows[0].attempts == 2
    assert receiver.requests == []


async def test_rotation_signs_with_both_secrets_during_overlap(
    hook_settings: Settings, sessionmaker: Maker, receiver: Receiver
) -> None:
    endpoint = await _endpoint(sessionmaker, hook_settings, receiver.url)
    old = endpoint.secret
    async with session_scope(sessionmaker) as session:
        new = (await service.rotate_secret(session, endpoint.id)).secret
    assert new != old
    await _event(sessionmaker, "overlap")
    async with running(hook_settings, sessionmaker):
        await receiver.wait_for(lambda r: len(r.requests) == 1)
    signatures = receiver.requests[0].headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert receiver.requests[0].verify(old)["data"]["reason"] == "overlap"
    assert receiver.requests[0].verify(new)["data"]["reason"] == "overlap"

    async with session_scope(sessionmaker) as session:  # the overlap is over
        await session.execute(
            update(WebhookEndpoint).values(previous_secret_expires_at=utcnow() - timedelta(1))
        )
    await _event(sessionmaker, "after")
    async with running(hook_settings, sessionmaker):
        await receiver.wait_for(lambda r: len(r.requests) == 2)
    late = receiver.requests[1]
    assert len(late.headers["webhook-signature"].split(" ")) == 1
    assert late.verify(new)["data"]["reason"] == "after"
    with pytest.raises(Exception, match="signature"):
        Webhook(old).verify(late.body, late.headers)


async def test_replay_one_and_failed_since(
    hook_settings: Settings, sessionmaker: Maker, receiver: Receiver
) -> None:
    settings = hook_settings.model_copy(update={"webhook_retry_delays": [0.05]})
    endpoint = await _endpoint(sessionmaker, settings, receiver.url)
    await _event(sessionmaker, "one")
    async with running(settings, sessionmaker):
        await _until(sessionmaker, lambda rows: rows and rows[0].state == "DELIVERED")
        async with session_scope(sessionmaker) as session:
            delivery_id = (await _deliveries(sessionmaker))[0].id
            await service.replay(session, endpoint.id, delivery_id)
        await receiver.wait_for(lambda r: len(r.requests) == 2)
    assert receiver.requests[0].id == receiver.requests[1].id
    assert receiver.requests[0].body == receiver.requests[1].body

    since = utcnow()
    receiver.answer = lambda _: (500, {}, b"no")
    await _event(sessionmaker, "two")
    async with running(settings, sessionmaker):
        rows = await _until(sessionmaker, lambda rows: len(rows) == 2 and rows[1].state == "FAILED")
    assert rows[1].attempts == 2  # the first try and the one retry configured
    failed_id = receiver.requests[-1].id
    receiver.answer = lambda _: (204, {}, b"")
    async with session_scope(sessionmaker) as session:
        assert await service.replay_failed(session, endpoint.id, since) == 1
        assert await service.replay_failed(session, endpoint.id, utcnow() + timedelta(1)) == 0
    async with running(settings, sessionmaker):
        rows = await _until(sessionmaker, lambda rows: rows[1].state == "DELIVERED")
    assert receiver.requests[-1].id == failed_id and receiver.requests[-1].status == 204
    assert rows[1].status_code == 204 and rows[1].error is None


async def test_a_dead_workers_lease_runs_out(
    hook_settings: Settings, sessionmaker: Maker, receiver: Receiver
) -> None:
    settings = hook_settings.model_copy(update={"webhook_lease": 0.5})
    await _endpoint(sessionmaker, settings, receiver.url)
    await _event(sessionmaker)
    dead = Dispatcher(settings, sessionmaker)  # claims, then "dies" before sending
    jobs = await dead.claim(10)
    assert len(jobs) == 1
    other = Dispatcher(settings, sessionmaker)
    assert await other.claim(10) == []  # leased
    again: list[Any] = []
    for _ in range(200):
        again = await other.claim(10)
        if again:
            break
        await asyncio.sleep(0.05)
    assert [j.event_id for j in again] == [jobs[0].event_id]
    assert again[0].attempt == 2 and again[0].body == jobs[0].body
    await dead.sender.close()
    await other.sender.close()


async def test_failing_for_days_disables(hook_settings: Settings, sessionmaker: Maker) -> None:
    endpoint = await _endpoint(sessionmaker, hook_settings, "http://127.0.0.1:9/")
    async with session_scope(sessionmaker) as session:
        await session.execute(
            update(WebhookEndpoint).values(failing_since=utcnow() - timedelta(days=4))
        )
    dispatcher = Dispatcher(hook_settings, sessionmaker)
    await dispatcher.housekeeping()
    async with session_scope(sessionmaker) as session:
        assert (await session.get(WebhookEndpoint, endpoint.id)).enabled is True  # type: ignore[union-attr]
        await session.execute(
            update(WebhookEndpoint).values(failing_since=utcnow() - timedelta(days=5, hours=1))
        )
    await dispatcher.housekeeping()
    async with session_scope(sessionmaker) as session:
        row = await session.get(WebhookEndpoint, endpoint.id)
        assert row is not None and row.enabled is False
        assert row.disabled_reason == "every delivery failed for 5 days"
    await dispatcher.sender.close()


async def test_retry_after_and_schedule() -> None:
    delays = [5.0, 300.0]
    assert 4.0 <= (next_delay(1, delays, None) or 0) <= 6.0
    assert 240.0 <= (next_delay(2, delays, None) or 0) <= 360.0
    assert next_delay(3, delays, None) is None
    assert next_delay(1, delays, 42.0) == 42.0
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None


async def test_429_retry_after_is_honoured(
    hook_settings: Settings, sessionmaker: Maker, receiver: Receiver
) -> None:
    receiver.answer = lambda _: (429, {"Retry-After": "3600"}, b"slow down")
    await _endpoint(sessionmaker, hook_settings, receiver.url)
    await _event(sessionmaker)
    async with running(hook_settings, sessionmaker):
        rows = await _until(sessionmaker, lambda rows: rows and rows[0].status_code == 429)
    row = rows[0]
    assert row.state == "PENDING" and row.next_attempt_at is not None
    assert row.next_attempt_at - row.last_attempt_at >= timedelta(seconds=3599)  # type: ignore[operator]


async def test_retention_and_stored_payload(
    hook_settings: Settings, sessionmaker: Maker, receiver: Receiver
) -> None:
    settings = hook_settings.model_copy(update={"retention_days": 10})
    await _endpoint(sessionmaker, settings, receiver.url)
    await _event(sessionmaker, "kept")
    async with running(settings, sessionmaker):
        rows = await _until(sessionmaker, lambda rows: rows and rows[0].state == "DELIVERED")
    assert rows[0].payload is not None and rows[0].payload.encode() == receiver.requests[0].body
    await _event(sessionmaker, "old but waiting")
    async with session_scope(sessionmaker) as session:
        await session.execute(
            update(WebhookDelivery).values(created_at=utcnow() - timedelta(days=11))
        )
    dispatcher = Dispatcher(settings, sessionmaker)
    await dispatcher.housekeeping()
    await dispatcher.sender.close()
    rows = await _deliveries(sessionmaker)
    assert [(r.state, r.data["reason"]) for r in rows] == [("PENDING", "old but waiting")]


async def test_a_hanging_receiver_does_not_hold_the_others(
    hook_settings: Settings, sessionmaker: Maker, receiver: Receiver
) -> None:
    settings = hook_settings.model_copy(
        update={"webhook_concurrency": 8, "webhook_endpoint_concurrency": 4, "webhook_timeout": 60}
    )
    stuck = await Receiver().start()
    stuck.gate.clear()  # takes requests and never answers (until the end of the test)
    try:
        await _endpoint(sessionmaker, settings, stuck.url)
        for i in range(20):
            await _event(sessionmaker, f"first{i}")  # to both endpoints once the second exists
        await _endpoint(sessionmaker, settings, receiver.url)
        for i in range(20):
            await _event(sessionmaker, f"second{i}")
        async with running(settings, sessionmaker):
            await receiver.wait_for(lambda r: len(r.accepted()) == 20)
            await stuck.wait_for(lambda r: r.waiting == 4)
            assert stuck.waiting == 4  # the hanging endpoint holds its 4 slots, no more
        assert {r.event["data"]["reason"] for r in receiver.accepted()} == {
            f"second{i}" for i in range(20)
        }
    finally:
        stuck.gate.set()
        await stuck.stop()
