"""Database-backed numbers: counter totals, the admin time series, batch and dead letter
counts, live workers, the sending-paused flag. Read-only.

Counters come from the `metrics` table (per-minute rows written by `events.bump_metrics`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import structlog
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.db.dialect import hour_start
from mailer.events import minute_bucket
from mailer.models import Batch, DeadLetter, Metric
from mailer.models.base import utcnow
from mailer.models.enums import BatchStatus, MetricKind
from mailer.queue.base import JobQueue
from mailer.reputation.service import PauseState
from mailer.reputation.service import current as current_pause
from mailer.worker.heartbeats import workers_alive

log = structlog.get_logger("mailer.metrics")

KINDS: tuple[str, ...] = tuple(k.value for k in MetricKind)
QUEUE_DEPTH_TIMEOUT_S = 2.0
MINUTE_MAX_HOURS = 6  # ?hours=N up to this gets minute buckets, beyond it hour buckets

Granularity = Literal["minute", "hour"]


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(KINDS, 0)


# -- counters -----------------------------------------------------------------------------


async def metric_totals(
    session: AsyncSession, *, since: datetime
) -> tuple[dict[str, int], dict[str, int]]:
    """(all-time totals, totals of buckets after `since`) per kind, in one scan."""
    recent = func.sum(case((Metric.bucket > since, Metric.count), else_=0))
    rows = await session.execute(
        select(Metric.kind, func.sum(Metric.count), recent).group_by(Metric.kind)
    )
    totals, window = zero_counts(), zero_counts()
    for kind, total, in_window in rows:
        if kind in totals:
            totals[kind] = int(total or 0)
            window[kind] = int(in_window or 0)
    return totals, window


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class Series:
    hours: int
    granularity: Granularity
    start: datetime  # first bucket's start
    end: datetime  # exclusive: last bucket's start + one step
    buckets: list[Bucket]
    totals: dict[str, int]

    def rate(self, kind: MetricKind) -> float | None:
        sent = self.totals[MetricKind.SENT]
        return self.totals[kind] / sent if sent else None


async def metric_series(
    session: AsyncSession, hours: int, *, now: datetime | None = None
) -> Series:
    """Counts per bucket for the last `hours` hours, every bucket present (zeros included):
    minute buckets up to MINUTE_MAX_HOURS, hour buckets beyond. The last bucket is the one
    containing `now`."""
    moment = now or utcnow()
    if hours <= MINUTE_MAX_HOURS:
        granularity: Granularity = "minute"
        step, count = timedelta(minutes=1), hours * 60
        last = minute_bucket(moment)
        bucket_expr: ColumnElement[datetime] = Metric.bucket.expression
    else:
        granularity, step, count = "hour", timedelta(hours=1), hours
        last = minute_bucket(moment).replace(minute=0)
        bucket_expr = hour_start(session, Metric.bucket)
    start, end = last - step * (count - 1), last + step
    grouped = bucket_expr.label("bucket_start")
    rows = await session.execute(
        select(grouped, Metric.kind, func.sum(Metric.count))
        .where(Metric.bucket >= start, Metric.bucket < end)
        .group_by(bucket_expr, Metric.kind)
    )
    found: dict[datetime, dict[str, int]] = {}
    for bucket_start, kind, total in rows:
        if kind in KINDS:
            found.setdefault(bucket_start, zero_counts())[kind] = int(total or 0)
    buckets = []
    totals = zero_counts()
    for i in range(count):
        at = start + step * i
        counts = found.get(at) or zero_counts()
        for kind, value in counts.items():
            totals[kind] += value
        buckets.append(Bucket(at, counts))
    return Series(hours, granularity, start, end, buckets, totals)


# -- batches, dead letters ------------------------------------------------


async def batch_counts(session: AsyncSession) -> dict[str, int]:
    counts = dict.fromkeys((s.value for s in BatchStatus), 0)
    rows = await session.execute(select(Batch.status, func.count()).group_by(Batch.status))
    for status, n in rows:
        counts[str(status)] = int(n)
    return counts


async def dead_letter_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(DeadLetter)) or 0)


# -- the snapshot both /metrics endpoints serve -------------------------------------------


async def queue_depth(queue: JobQueue, timeout: float = QUEUE_DEPTH_TIMEOUT_S) -> int | None:
    """Jobs waiting/delayed/active, or None when the queue backend does not answer."""
    try:
        return int(await asyncio.wait_for(queue.depth(), timeout))
    except Exception:
        return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    totals: dict[str, int]
    last_hour: dict[str, int]
    batches: dict[str, int]
    dead_letters: int
    workers_alive: int
    queue_depth: int | None
    pause: PauseState


async def take_snapshot(
    session: AsyncSession, queue: JobQueue, *, worker_window_s: float
) -> Snapshot:
    """Read everything. Uses the caller's session: on SQLite every transaction holds the
    write lock, so a second session inside a request would wait for the request's own."""
    now = utcnow()
    depth_task = asyncio.create_task(queue_depth(queue))
    try:
        totals, last_hour = await metric_totals(session, since=now - timedelta(hours=1))
        batches = await batch_counts(session)
        dead = await dead_letter_count(session)
        alive = await workers_alive(session, worker_window_s)
        pause = await current_pause(session)
    finally:
        depth = await depth_task
    return Snapshot(now, totals, last_hour, batches, dead, alive, depth, pause)


@dataclass
class SnapshotCache:
    """The latest snapshot, refreshed at most every `ttl` seconds, so scrapes and public
    summary requests cost at most a few queries per ttl whatever their rate."""

    ttl: float = 5.0
    latest: Snapshot | None = None
    _taken: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def fresh(self) -> bool:
        return self.latest is not None and time.monotonic() - self._taken < self.ttl

    async def get(
        self, session: AsyncSession, queue: JobQueue, *, worker_window_s: float
    ) -> Snapshot:
        """The cached snapshot, refreshed if older than ttl. If the refresh fails, the stale
        snapshot (its taken_at tells its age) or, without one, the error."""
        if self.fresh():
            assert self.latest is not None
            return self.latest
        async with self._lock:
            if self.fresh():  # another request refreshed it meanwhile
                assert self.latest is not None
                return self.latest
            try:
                snapshot = await take_snapshot(session, queue, worker_window_s=worker_window_s)
            except Exception as exc:
                if self.latest is None:
                    raise
                log.warning("metrics_snapshot_failed", error=type(exc).__name__)
                return self.latest
            self.latest, self._taken = snapshot, time.monotonic()
            return snapshot
