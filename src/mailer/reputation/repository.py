"""Queries of the reputation guard: the pause row in `system_state`, the metrics window,
the recent batches' rates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Batch, Metric, SystemState
from mailer.models.base import utcnow
from mailer.models.enums import BatchStatus, MetricKind


async def read_state(session: AsyncSession, key: str) -> dict[str, Any] | None:
    """The value of a `system_state` row, None when there is none."""
    row = await session.get(SystemState, key)
    return None if row is None else dict(row.value or {})


async def write_state(session: AsyncSession, key: str, value: dict[str, Any]) -> None:
    """Create or replace a `system_state` row (locked while it is replaced)."""
    row = await session.get(SystemState, key, with_for_update=True)
    if row is None:
        session.add(SystemState(key=key, value=value, updated_at=utcnow()))
    else:
        row.value = value
        row.updated_at = utcnow()
    await session.flush()


async def metric_counts_since(
    session: AsyncSession, since: datetime, kinds: list[MetricKind]
) -> dict[str, int]:
    """Totals of the metrics of `kinds` in buckets from `since`."""
    rows = await session.execute(
        select(Metric.kind, func.sum(Metric.count))
        .where(Metric.bucket >= since, Metric.kind.in_(kinds))
        .group_by(Metric.kind)
    )
    return {str(kind): int(n or 0) for kind, n in rows.tuples()}


async def batch_rates_since(
    session: AsyncSession, since: datetime, min_sends: int
) -> list[tuple[str, int, int, int]]:
    """(id, sent, bounced, complained) of SENDING or COMPLETED batches created from `since`
    with at least `min_sends` sent."""
    rows = await session.execute(
        select(Batch.id, Batch.sent_count, Batch.bounced_count, Batch.complained_count).where(
            Batch.created_at >= since,
            Batch.status.in_([BatchStatus.SENDING, BatchStatus.COMPLETED]),
            Batch.sent_count >= min_sends,
        )
    )
    return [(str(b), int(s), int(bo), int(c)) for b, s, bo, c in rows.tuples()]
