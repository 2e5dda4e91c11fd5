"""A worker SIGKILLed with webhook deliveries in flight: another worker delivers them once
their lease runs out, with the same webhook-ids; none is lost."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mailer.db import session_scope
from mailer.models import WebhookDelivery
from mailer.webhook_endpoints import catalog, outbox, service
from tests.fixtures.processes import env_for, start_worker
from tests.fixtures.webhook_receiver import Receiver

EVENTS = 30


async def test_killed_worker_loses_nothing(
    settings_factory: Any, sessionmaker: Any, receiver: Receiver, tmp_path: Path
) -> None:
    settings = settings_factory(webhook_allow_private=True)
    async with session_scope(sessionmaker) as session:
        endpoint = await service.create(session, settings, url=receiver.url)
    async with session_scope(sessionmaker) as session:
        for i in range(EVENTS):
            await outbox.add_event(session, catalog.SENDING_RESUMED, {"by": f"n{i}"})
    async with session_scope(sessionmaker) as session:
        event_ids = set((await session.scalars(select(WebhookDelivery.event_id))).all())
    assert len(event_ids) == EVENTS

    env = env_for(
        settings,
        WEBHOOK_ALLOW_PRIVATE="true",
        WEBHOOK_LEASE="2",
        WEBHOOK_POLL_INTERVAL="0.1",
        WEBHOOK_RETRY_DELAYS="0.2,0.2,0.2,0.2,0.2",
        WEBHOOK_TIMEOUT="30",
    )
    receiver.gate.clear()  # the receiver takes the requests and does not answer
    first = start_worker(env, tmp_path / "worker-1.log")
    try:
        await receiver.wait_for(lambda r: r.waiting == EVENTS)
    finally:
        first.kill()
    assert receiver.requests == []
    receiver.gate.set()  # the dead worker's connections are gone; nothing was recorded
    await receiver.wait_for(lambda r: r.waiting == 0)
    receiver.requests.clear()  # answers to the dead worker's closed connections
    async with session_scope(sessionmaker) as session:
        rows = list(await session.scalars(select(WebhookDelivery)))
    assert {r.state for r in rows} == {"PENDING"} and all(r.leased_until for r in rows)

    second = start_worker(env, tmp_path / "worker-2.log")
    try:
        await receiver.wait_for(lambda r: {q.id for q in r.accepted()} >= event_ids)
        for _ in range(400):
            async with session_scope(sessionmaker) as session:
                states = Counter((await session.scalars(select(WebhookDelivery.state))).all())
            if states == {"DELIVERED": EVENTS}:
                break
            await asyncio.sleep(0.05)
        assert states == {"DELIVERED": EVENTS}
    finally:
        second.stop()
    for request in receiver.accepted():
        assert request.verify(endpoint.secret)["type"] == "sending.resumed"
