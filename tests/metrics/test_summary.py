"""The database reads behind the metrics endpoints, with fixed clocks: totals, the time series
(minute and hour buckets), batches, dead letters, the pause flag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.config import Settings
from mailer.db import session_scope
from mailer.events import bump_metrics
from mailer.metrics.summary import (
    Snapshot,
    SnapshotCache,
    batch_counts,
    dead_letter_count,
    metric_series,
    metric_totals,
    queue_depth,
)
from mailer.models import SystemState
from mailer.models.enums import BatchStatus, MetricKind
from mailer.queue.base import ChunkJob
from mailer.queue.factory import build_queue
from mailer.reputation.service import PauseState
from mailer.reputation.service import current as read_pause
from tests.metrics.helpers import add_batches, add_dead_letter

Maker = async_sessionmaker[AsyncSession]
NOW = datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)
SENT, FAILED, BOUNCED = MetricKind.SENT, MetricKind.FAILED, MetricKind.BOUNCED
COMPLAINED, DELIVERED = MetricKind.COMPLAINED, MetricKind.DELIVERED


async def _bump(maker: Maker, at: datetime, **counts: int) -> None:
    async with session_scope(maker) as session:
        await bump_metrics(session, counts, at=at)


async def _standard_rows(maker: Maker) -> None:
    await _bump(maker, NOW, sent=5)
    await _bump(maker, NOW - timedelta(minutes=30), sent=3, bounced=1)
    await _bump(maker, NOW - timedelta(hours=3), sent=7, failed=2)
    await _bump(maker, NOW - timedelta(days=2), delivered=4, complained=1)


async def test_totals_all_time_and_since(sessionmaker: Maker) -> None:
    await _standard_rows(sessionmaker)
    async with sessionmaker() as session:
        totals, recent = await metric_totals(session, since=NOW - timedelta(hours=1))
    assert totals == {
        "sent": 15,
        "failed": 2,
        "bounced": 1,
        "complained": 1,
        "delivered": 4,
        "suppressed": 0,
        "retried": 0,
        "unsubscribed": 0,
    }
    assert recent == {**dict.fromkeys(totals, 0), "sent": 8, "bounced": 1}


async def test_minute_series_is_continuous_and_puts_counts_in_their_minute(
    sessionmaker: Maker,
) -> None:
    await _standard_rows(sessionmaker)
    await _bump(sessionmaker, NOW - timedelta(minutes=30, seconds=-3), sent=2)  # same minute
    async with sessionmaker() as session:
        hour = await metric_series(session, 1, now=NOW)
        six = await metric_series(session, 6, now=NOW)

    assert hour.granularity == "minute"
    assert len(hour.buckets) == 60
    assert hour.buckets[-1].start == datetime(2024, 5, 1, 12, 34, tzinfo=UTC)
    assert hour.start == datetime(2024, 5, 1, 11, 35, tzinfo=UTC)
    assert hour.end == datetime(2024, 5, 1, 12, 35, tzinfo=UTC)
    steps = {b.start - a.start for a, b in zip(hour.buckets, hour.buckets[1:], strict=False)}
    assert steps == {timedelta(minutes=1)}
    nonzero = {b.start: {k: v for k, v in b.counts.items() if v} for b in hour.buckets}
    nonzero = {start: counts for start, counts in nonzero.items() if counts}
    assert nonzero == {
        datetime(2024, 5, 1, 12, 34, tzinfo=UTC): {"sent": 5},
        datetime(2024, 5, 1, 12, 4, tzinfo=UTC): {"sent": 5, "bounced": 1},
    }
    assert hour.totals["sent"] == 10
    assert hour.rate(BOUNCED) == pytest.approx(0.1)
    assert hour.rate(COMPLAINED) == 0.0

    assert len(six.buckets) == 360
    by_start = {b.start: b.counts for b in six.buckets}
    assert by_start[datetime(2024, 5, 1, 9, 34, tzinfo=UTC)]["sent"] == 7
    assert by_start[datetime(2024, 5, 1, 9, 34, tzinfo=UTC)]["failed"] == 2
    assert six.totals["sent"] == 17
    assert six.totals["delivered"] == 0  # two days ago: outside


async def test_hour_series_sums_minutes_into_utc_hours(sessionmaker: Maker) -> None:
    await _standard_rows(sessionmaker)
    # Two rows in the 10:00 hour and one in the 11:00 hour, a minute apart.
    await _bump(sessionmaker, datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC), delivered=2)
    await _bump(sessionmaker, datetime(2024, 5, 1, 10, 59, 59, tzinfo=UTC), delivered=3)
    await _bump(sessionmaker, datetime(2024, 5, 1, 11, 0, 0, tzinfo=UTC), delivered=1)
    async with sessionmaker() as session:
        if session.get_bind().dialect.name == "postgresql":
            # date_trunc must cut UTC hours whatever the session's time zone (+05:30 here).
            await session.execute(text("SET TIME ZONE 'Asia/Kolkata'"))
        day2 = await metric_series(session, 48, now=NOW)
        day3 = await metric_series(session, 72, now=NOW)

    assert day2.granularity == "hour"
    assert len(day2.buckets) == 48
    assert day2.buckets[-1].start == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert day2.start == datetime(2024, 4, 29, 13, tzinfo=UTC)
    by_start = {b.start: b.counts for b in day2.buckets}
    assert by_start[datetime(2024, 5, 1, 12, tzinfo=UTC)]["sent"] == 8  # 12:34 and 12:04
    assert by_start[datetime(2024, 5, 1, 12, tzinfo=UTC)]["bounced"] == 1
    assert by_start[datetime(2024, 5, 1, 11, tzinfo=UTC)]["sent"] == 0
    assert by_start[datetime(2024, 5, 1, 9, tzinfo=UTC)]["sent"] == 7
    assert by_start[datetime(2024, 5, 1, 10, tzinfo=UTC)]["delivered"] == 5
    assert by_start[datetime(2024, 5, 1, 11, tzinfo=UTC)]["delivered"] == 1
    assert sum(b.counts["sent"] for b in day2.buckets) == day2.totals["sent"] == 15
    assert day2.totals["complained"] == 0  # 48 h ago falls in the hour before the window

    by_start3 = {b.start: b.counts for b in day3.buckets}
    assert by_start3[datetime(2024, 4, 29, 12, tzinfo=UTC)]["complained"] == 1
    assert day3.totals["delivered"] == 10
    assert day3.rate(COMPLAINED) == pytest.approx(1 / 15)


async def test_series_with_no_rows_is_all_zero_and_rates_null(sessionmaker: Maker) -> None:
    async with sessionmaker() as session:
        series = await metric_series(session, 24, now=NOW)
    assert len(series.buckets) == 24
    assert all(not any(b.counts.values()) for b in series.buckets)
    assert series.rate(BOUNCED) is None
    assert series.rate(COMPLAINED) is None


async def test_batch_counts_dead_letters_and_pause_flag(sessionmaker: Maker) -> None:
    async with sessionmaker() as session:
        assert await batch_counts(session) == {
            "SCHEDULED": 0,
            "SENDING": 0,
            "COMPLETED": 0,
            "CANCELLED": 0,
        }
        assert await dead_letter_count(session) == 0
        assert await read_pause(session) == PauseState(paused=False)
    async with session_scope(sessionmaker) as session:
        ids = await add_batches(
            session,
            [
                BatchStatus.SENDING,
                BatchStatus.COMPLETED,
                BatchStatus.COMPLETED,
                BatchStatus.CANCELLED,
            ],
        )
        await add_dead_letter(session, ids[0])
        await add_dead_letter(session, ids[1])
        session.add(
            SystemState(
                key="sending_paused",
                value={"paused": True, "reason": "bounce rate 5%", "since": NOW.isoformat()},
            )
        )
    async with sessionmaker() as session:
        assert await batch_counts(session) == {
            "SCHEDULED": 0,
            "SENDING": 1,
            "COMPLETED": 2,
            "CANCELLED": 1,
        }
        assert await dead_letter_count(session) == 2
        assert await read_pause(session) == PauseState(True, "bounce rate 5%", NOW)


async def test_queue_depth_counts_jobs_and_is_none_when_unreachable(
    settings: Settings, settings_factory: Any
) -> None:
    queue = build_queue(settings)
    try:
        await queue.enqueue([ChunkJob("b1", 0, 10), ChunkJob("b1", 10, 20)])
        assert await queue_depth(queue) == 2
    finally:
        await queue.close()
    down = build_queue(settings_factory(redis_url="redis://127.0.0.1:1/0"))
    try:
        assert await queue_depth(down, timeout=1) is None
    finally:
        await down.close()


async def test_snapshot_cache_serves_cached_then_refreshes(
    sessionmaker: Maker, settings: Settings
) -> None:
    queue = build_queue(settings)
    cache = SnapshotCache(ttl=3600)

    async def get() -> Snapshot:
        async with sessionmaker() as session:
            return await cache.get(session, queue, worker_window_s=90)

    try:
        await _bump(sessionmaker, datetime.now(UTC), sent=1)
        first = await get()
        assert first.totals["sent"] == 1
        assert first.last_hour["sent"] == 1
        await _bump(sessionmaker, datetime.now(UTC), sent=1)
        assert await get() is first
        cache.ttl = 0
        second = await get()
        assert second.totals["sent"] == 2
        assert second.queue_depth == 0
    finally:
        await queue.close()
