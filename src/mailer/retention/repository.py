"""The purge's statements. Each deletes at most `limit` rows, found through an index, so
every transaction is short and holds few row locks: sending never waits on a purge."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Attachment, Batch, DeadLetter, Event, Metric, Recipient
from mailer.models.base import utcnow
from mailer.models.enums import BatchStatus

FINISHED = (BatchStatus.COMPLETED, BatchStatus.CANCELLED)


def _purgeable(cutoff: datetime) -> ColumnElement[bool]:
    return and_(
        Batch.status.in_(FINISHED),
        Batch.completed_at < cutoff,
        Batch.purged_at.is_(None),
    )


async def purgeable_batches(session: AsyncSession, cutoff: datetime, limit: int) -> list[str]:
    """Finished before `cutoff` and not purged yet, oldest first."""
    rows = await session.scalars(
        select(Batch.id).where(_purgeable(cutoff)).order_by(Batch.completed_at).limit(limit)
    )
    return list(rows)


async def delete_events_of(session: AsyncSession, batch_id: str, limit: int) -> int:
    ids = select(Event.id).where(Event.batch_id == batch_id).limit(limit).scalar_subquery()
    result = await session.execute(
        delete(Event).where(Event.id.in_(ids)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_recipients_of(session: AsyncSession, batch_id: str, limit: int) -> int:
    ids = select(Recipient.id).where(Recipient.batch_id == batch_id).limit(limit).scalar_subquery()
    result = await session.execute(
        delete(Recipient).where(Recipient.id.in_(ids)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def mark_purged(session: AsyncSession, batch_id: str) -> None:
    """The batch's rows are gone; its attachments (POST /emails, a few rows) go with them."""
    await session.execute(
        delete(Attachment)
        .where(Attachment.batch_id == batch_id)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(purged_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def delete_loose_events(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Events of no batch (notifications about messages not ours) older than `cutoff`."""
    ids = (
        select(Event.id)
        .where(Event.created_at < cutoff, Event.batch_id.is_(None))
        .limit(limit)
        .scalar_subquery()
    )
    result = await session.execute(
        delete(Event).where(Event.id.in_(ids)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_dead_letters(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    ids = select(DeadLetter.id).where(DeadLetter.failed_at < cutoff).limit(limit).scalar_subquery()
    result = await session.execute(
        delete(DeadLetter)
        .where(DeadLetter.id.in_(ids))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_metrics(session: AsyncSession, cutoff: datetime) -> int:
    """Per-minute counters older than `cutoff`, at most a day of them."""
    oldest = await session.scalar(select(func.min(Metric.bucket)))
    if oldest is None or oldest >= cutoff:
        return 0
    upto = min(cutoff, oldest + timedelta(days=1))
    result = await session.execute(
        delete(Metric).where(Metric.bucket < upto).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def count_purgeable(session: AsyncSession, cutoff: datetime) -> dict[str, int]:
    """What a purge at `cutoff` would delete (for --dry-run)."""
    batches = select(Batch.id).where(_purgeable(cutoff))
    return {
        "batches": int(
            await session.scalar(select(func.count()).select_from(batches.subquery())) or 0
        ),
        "recipients": int(
            await session.scalar(select(func.count()).where(Recipient.batch_id.in_(batches))) or 0
        ),
        "events": int(
            await session.scalar(select(func.count()).where(Event.batch_id.in_(batches))) or 0
        )
        + int(
            await session.scalar(
                select(func.count()).where(Event.created_at < cutoff, Event.batch_id.is_(None))
            )
            or 0
        ),
        "dead_letters": int(
            await session.scalar(select(func.count()).where(DeadLetter.failed_at < cutoff)) or 0
        ),
        "metrics": int(
            await session.scalar(select(func.count()).where(Metric.bucket < cutoff)) or 0
        ),
    }
