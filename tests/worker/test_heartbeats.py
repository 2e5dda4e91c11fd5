"""Worker heartbeats: the upsert, counting recent ones, forgetting a worker, pruning."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.db import session_scope
from mailer.delivery.recorder import Outcome
from mailer.models import SystemState
from mailer.models.enums import RecipientStatus
from mailer.worker.heartbeats import (
    STALE_WORKER_S,
    SentTally,
    default_worker_id,
    forget_worker,
    worker_heartbeat,
    worker_rates,
    workers_alive,
)
from tests.fixtures.client import api_client

Maker = async_sessionmaker[AsyncSession]


async def test_worker_heartbeats(sessionmaker: Maker) -> None:
    async with session_scope(sessionmaker) as session:
        await worker_heartbeat(session, "host-a:1", {"transport": "ses", "started": "t0"})
        await worker_heartbeat(session, "host-b:2", {"transport": "smtp"})
    async with session_scope(sessionmaker) as session:  # a second beat updates, not adds
        await worker_heartbeat(session, "host-a:1", {"transport": "ses", "started": "t1"})
    async with sessionmaker() as session:
        assert await workers_alive(session, 60) == 2
        value = await session.scalar(
            SystemState.__table__.select()
            .with_only_columns(SystemState.value)
            .where(SystemState.key == "worker:host-a:1")
        )
        assert value == {"transport": "ses", "started": "t1"}

    async with session_scope(sessionmaker) as session:  # host-b went quiet 10 minutes ago
        await session.execute(
            update(SystemState)
            .where(SystemState.key == "worker:host-b:2")
            .values(updated_at=datetime.now(UTC) - timedelta(minutes=10))
        )
    async with sessionmaker() as session:
        assert await workers_alive(session, 60) == 1
        assert await workers_alive(session, 3600) == 2

    async with session_scope(sessionmaker) as session:
        await forget_worker(session, "host-a:1")
    async with sessionmaker() as session:
        assert await workers_alive(session, 3600) == 1

    async with session_scope(sessionmaker) as session:  # silent for over a day: pruned
        await session.execute(
            update(SystemState)
            .where(SystemState.key == "worker:host-b:2")
            .values(updated_at=datetime.now(UTC) - timedelta(seconds=STALE_WORKER_S + 60))
        )
        await worker_heartbeat(session, "host-c:3", {})
    async with sessionmaker() as session:
        keys = set(
            await session.scalars(SystemState.__table__.select().with_only_columns(SystemState.key))
        )
    assert keys == {"worker:host-c:3"}


def test_default_worker_id_fits_the_key_column() -> None:
    ident = default_worker_id()
    assert ident.endswith(f":{__import__('os').getpid()}")
    assert len("worker:" + ident) <= 64


def _sent(count: int) -> list[Outcome]:
    return [
        Outcome(recipient_id=i, batch_id="b", email=f"u{i}@example.com", status=status, attempts=1)
        for i in range(count)
        for status in (RecipientStatus.SENT, RecipientStatus.FAILED)  # only SENT counts
    ]


async def test_heartbeats_carry_the_send_rate(sessionmaker: Maker) -> None:
    """Beats at t0, +30 s, +70 s and +100 s, written as the worker writes them; the rate is
    read back from the rows: over the beats about RATE_WINDOW_S apart."""
    tally = SentTally()
    t0 = datetime.now(UTC) - timedelta(seconds=100)
    rates = []
    for offset, sent in ((0, 0), (30, 150), (70, 250), (100, 400)):
        tally(_sent(sent - tally.sent))
        info = {"transport": "outbox", **tally.beat(t0 + timedelta(seconds=offset))}
        async with session_scope(sessionmaker) as session:
            await worker_heartbeat(session, "host-a:1", info)
        async with sessionmaker() as session:
            (rate,) = await worker_rates(session, 60)
        rates.append(rate)
    assert [r.sent for r in rates] == [0, 150, 250, 400]
    assert rates[0].per_second is None  # one beat: no rate yet
    assert rates[1].per_second == pytest.approx(150 / 30) and rates[1].window_s == 30
    assert rates[2].per_second == pytest.approx(250 / 70)  # t0 is the newest beat ≥ 60 s old
    assert rates[3].per_second == pytest.approx((400 - 150) / 70)  # now from the +30 s beat
    assert rates[3].worker_id == "host-a:1" and rates[3].transport == "outbox"
    assert rates[3].seen_s < 60

    async with session_scope(sessionmaker) as session:  # a worker of an older version
        await worker_heartbeat(session, "host-b:2", {"transport": "ses"})
        await session.execute(  # and one gone quiet
            update(SystemState)
            .where(SystemState.key == "worker:host-a:1")
            .values(updated_at=datetime.now(UTC) - timedelta(minutes=10))
        )
    async with sessionmaker() as session:
        (old,) = await worker_rates(session, 60)
    assert (old.worker_id, old.sent, old.per_second) == ("host-b:2", None, None)


async def test_a_worker_heartbeat_counts_what_it_sent(settings_factory: Any) -> None:
    """A real worker (embedded in the API) sends a batch; its next heartbeats carry the count."""
    settings = settings_factory(worker_dead_after=3.0, reconcile_interval=0.5)
    async with api_client(settings, embedded_worker=True) as client:
        key = await client.make_key("admin", admin=True)
        headers = {"Authorization": f"Bearer {key}"}
        template = await client.http.post(
            "/api/v1/templates",
            json={"name": "t", "subject": "Hi", "text": "Hello"},
            headers=headers,
        )
        recipients = [{"email": f"rate{i}@example.com"} for i in range(7)]
        batch = await client.http.post(
            "/api/v1/batches",
            json={"template_id": template.json()["id"], "recipients": recipients},
            headers=headers,
        )
        assert batch.status_code == 201, batch.text
        for _ in range(300):
            async with client.state.read_sessionmaker() as session:
                found = await worker_rates(session, 60)
            if found and found[0].sent == 7:
                break
            await asyncio.sleep(0.1)
        assert [w.sent for w in found] == [7], found
        assert found[0].per_second is not None and found[0].per_second >= 0
