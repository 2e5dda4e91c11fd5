"""mailer.events: bulk event inserts and the per-minute metrics upsert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.events import bump_metrics, minute_bucket, record_events
from mailer.models import Event, Metric
from mailer.models.enums import EventType, MetricKind
from tests.webhooks import factories as f

Maker = async_sessionmaker[AsyncSession]
AT = datetime(2024, 3, 1, 10, 15, 42, 123456, tzinfo=UTC)


async def _metrics(sessionmaker: Maker) -> list[tuple[datetime, str, int]]:
    async with sessionmaker() as session:
        rows = await session.scalars(select(Metric).order_by(Metric.bucket, Metric.kind))
        return [(m.bucket, m.kind, m.count) for m in rows]


def test_minute_bucket() -> None:
    assert minute_bucket(AT) == datetime(2024, 3, 1, 10, 15, tzinfo=UTC)
    naive = datetime(2024, 3, 1, 10, 15, 59)
    assert minute_bucket(naive) == datetime(2024, 3, 1, 10, 15, tzinfo=UTC)
    assert minute_bucket().tzinfo is UTC


async def test_bump_metrics_accumulates(sessionmaker: Maker) -> None:
    async with sessionmaker() as session:
        await bump_metrics(session, {MetricKind.SENT: 3, MetricKind.FAILED: 0}, at=AT)
        await session.commit()
    async with sessionmaker() as session:
        await bump_metrics(
            session, {MetricKind.SENT: 2, "bounced": 1}, at=AT + timedelta(seconds=10)
        )
        await bump_metrics(session, {"sent": 5}, at=AT + timedelta(minutes=1))
        await bump_metrics(session, {}, at=AT)
        await session.commit()
    minute = minute_bucket(AT)
    assert await _metrics(sessionmaker) == [
        (minute, "bounced", 1),
        (minute, "sent", 5),
        (minute + timedelta(minutes=1), "sent", 5),
    ]


async def test_concurrent_bumps_add_up(sessionmaker: Maker) -> None:
    import asyncio

    async def bump() -> None:
        async with sessionmaker() as session:
            await bump_metrics(session, {MetricKind.DELIVERED: 1, MetricKind.SENT: 2}, at=AT)
            await session.commit()

    await asyncio.gather(*(bump() for _ in range(10)))
    minute = minute_bucket(AT)
    assert await _metrics(sessionmaker) == [(minute, "delivered", 10), (minute, "sent", 20)]


async def test_record_events(sessionmaker: Maker) -> None:
    async with sessionmaker() as session:
        [rec] = await f.sent_message(session, ["a@example.com"], "m1")
        await record_events(
            session,
            [
                {
                    "type": EventType.SENT,
                    "batch_id": rec.batch_id,
                    "recipient_id": rec.id,
                    "email": rec.email,
                    "data": {"providerMessageId": "m1"},
                },
                {"type": "UNKNOWN", "created_at": AT},
            ],
        )
        await record_events(session, [])
        await session.commit()
    async with sessionmaker() as session:
        events = (await session.scalars(select(Event).order_by(Event.id))).all()
    assert [(e.type, e.batch_id, e.recipient_id, e.email, e.data) for e in events] == [
        ("SENT", rec.batch_id, rec.id, "a@example.com", {"providerMessageId": "m1"}),
        ("UNKNOWN", None, None, None, {}),
    ]
    assert events[1].created_at == AT
    assert events[0].created_at.tzinfo is not None


async def test_record_events_rejects_unknown_columns(sessionmaker: Maker) -> None:
    async with sessionmaker() as session:
        with pytest.raises(ValueError, match="unknown event columns"):
            await record_events(session, [{"type": "SENT", "typo": 1}])
