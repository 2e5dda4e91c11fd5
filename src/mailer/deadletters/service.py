"""List, retry and purge dead letters (admin API and `mailer dlq`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.events import record_events
from mailer.models import Batch, DeadLetter, Recipient
from mailer.models.base import utcnow
from mailer.models.enums import BatchStatus, EventType, RecipientStatus
from mailer.queue.base import ChunkJob


@dataclass(slots=True)
class RetryResult:
    dead_letters: int
    recipients: int
    jobs: list[ChunkJob]


async def list_dead_letters(
    session: AsyncSession, *, limit: int, offset: int, batch_id: str | None = None
) -> tuple[Sequence[DeadLetter], int]:
    where = [DeadLetter.batch_id == batch_id] if batch_id else []
    total = await session.scalar(select(func.count()).select_from(DeadLetter).where(*where))
    rows = await session.scalars(
        select(DeadLetter).where(*where).order_by(DeadLetter.id).limit(limit).offset(offset)
    )
    return rows.all(), int(total or 0)


async def retry_dead_letters(
    session: AsyncSession, ids: Sequence[int] | None = None
) -> RetryResult:
    """Put the dead letters' FAILED recipients back to RETRYING, reopen their batches and
    return the chunk jobs to enqueue (after commit). The dead letters are removed."""
    query = select(DeadLetter).order_by(DeadLetter.id).with_for_update()
    if ids is not None:
        query = query.where(DeadLetter.id.in_(ids))
    letters = (await session.scalars(query)).all()
    now = utcnow()
    jobs: list[ChunkJob] = []
    revived = 0
    tag = f"dlq{int(now.timestamp())}"
    for letter in letters:
        batch = await session.get(Batch, letter.batch_id, with_for_update=True)
        if batch is None or batch.status == BatchStatus.CANCELLED:
            await session.delete(letter)
            continue
        result = await session.execute(
            update(Recipient)
            .where(
                Recipient.id.in_(letter.recipient_ids),
                Recipient.status == RecipientStatus.FAILED,
            )
            .values(status=RecipientStatus.RETRYING, updated_at=now)
            .returning(Recipient.id, Recipient.email)
            .execution_options(synchronize_session=False)
        )
        rows = result.tuples().all()
        if rows:
            revived += len(rows)
            batch.failed_count -= len(rows)
            batch.status = BatchStatus.SENDING
            batch.completed_at = None
            # The caller enqueues after commit: the reconciler's grace starts now.
            batch.enqueued_at = now
            await record_events(
                session,
                [
                    {
                        "batch_id": letter.batch_id,
                        "recipient_id": rid,
                        "email": email,
                        "type": EventType.RETRY,
                        "data": {"deadLetterId": letter.id, "manual": True},
                        "created_at": now,
                    }
                    for rid, email in rows
                ],
            )
            jobs.append(ChunkJob(letter.batch_id, letter.seq_start, letter.seq_end, tag))
        await session.delete(letter)
    await session.flush()
    return RetryResult(dead_letters=len(letters), recipients=revived, jobs=jobs)


async def purge_dead_letters(
    session: AsyncSession, *, before: datetime | None = None, ids: Sequence[int] | None = None
) -> int:
    statement = delete(DeadLetter)
    if before is not None:
        statement = statement.where(DeadLetter.failed_at < before)
    if ids is not None:
        statement = statement.where(DeadLetter.id.in_(ids))
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
