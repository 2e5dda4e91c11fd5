"""The reconciler's statements on batches and recipients."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.delivery.repository import abandoned_claim
from mailer.models import Batch, Recipient
from mailer.models.base import utcnow
from mailer.models.enums import UNFINISHED_STATUSES, BatchPriority, BatchStatus, RecipientStatus

# id, chunk size, total, enqueued_at, started (or created) at, high priority
SendingBatch = tuple[str, int, int, datetime | None, datetime, bool]


async def start_due_batches(session: AsyncSession, now: datetime) -> set[str]:
    """Scheduled batches whose send_at has come → SENDING; their ids."""
    due = await session.execute(
        update(Batch)
        .where(Batch.status == BatchStatus.SCHEDULED, Batch.send_at <= now)
        .values(status=BatchStatus.SENDING, started_at=now)
        .returning(Batch.id)
        .execution_options(synchronize_session=False)
    )
    return {str(batch_id) for batch_id in due.scalars().all()}


async def expire_claims(
    session: AsyncSession,
    claimed_before: datetime,
    now: datetime,
    *,
    dead_before: datetime | None = None,
    me: str = "",
) -> int:
    """Abandoned claims → RETRYING: claims of workers with no heartbeat since `dead_before`
    (None: this worker may not judge yet), and claims naming no worker made before
    `claimed_before` (the lease). `me`: this worker's key, whose claims are alive."""
    expired = await session.execute(
        update(Recipient)
        .where(abandoned_claim(claimed_before, dead_before, me))
        .values(status=RecipientStatus.RETRYING, claimed_at=None, claimed_by=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(expired.rowcount or 0)  # type: ignore[attr-defined]


async def sending_batches(session: AsyncSession, limit: int = 1000) -> Sequence[SendingBatch]:
    """The oldest SENDING batches."""
    rows = await session.execute(
        select(
            Batch.id,
            Batch.chunk_size,
            Batch.total_recipients,
            Batch.enqueued_at,
            func.coalesce(Batch.started_at, Batch.created_at),
            Batch.priority,
        )
        .where(Batch.status == BatchStatus.SENDING)
        .order_by(Batch.created_at)
        .limit(limit)
    )
    return [
        (str(b), int(c), int(t), e, s, p == BatchPriority.HIGH)
        for b, c, t, e, s, p in rows.tuples()
    ]


async def unfinished_chunks(session: AsyncSession, batch_id: str, chunk_size: int) -> list[int]:
    """The chunk numbers (seq // chunk_size) that hold unfinished recipients, in order."""
    starts = await session.scalars(
        select(Recipient.seq // chunk_size)
        .distinct()
        .where(Recipient.batch_id == batch_id, Recipient.status.in_(UNFINISHED_STATUSES))
    )
    return sorted(int(c) for c in starts.all())


async def take_requeue(session: AsyncSession, batch_id: str, seen: datetime | None) -> bool:
    """Set the batch's enqueued_at to now if it is still `seen`: True for the one caller
    that did it."""
    unchanged = Batch.enqueued_at.is_(None) if seen is None else Batch.enqueued_at == seen
    taken = await session.execute(
        update(Batch)
        .where(Batch.id == batch_id, unchanged)
        .values(enqueued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]
