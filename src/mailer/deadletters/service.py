"""List, retry and purge dead letters (admin API and `mailer dlq`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.batches.dispatch import enqueue_after_commit
from mailer.deadletters import repository
from mailer.events import record_events
from mailer.models import DeadLetter
from mailer.models.base import utcnow
from mailer.models.enums import BatchStatus, EventType
from mailer.queue.base import ChunkJob, JobQueue


@dataclass(slots=True)
class RetryResult:
    dead_letters: int
    recipients: int
    jobs: list[ChunkJob]


async def list_dead_letters(
    session: AsyncSession, *, limit: int, offset: int, batch_id: str | None = None
) -> tuple[Sequence[DeadLetter], int]:
    return await repository.list_page(session, limit=limit, offset=offset, batch_id=batch_id)


async def retry_dead_letters(
    session: AsyncSession,
    queue: JobQueue,
    ids: Sequence[int] | None = None,
    *,
    on_enqueue_failure: Callable[[Exception], None] | None = None,
) -> RetryResult:
    """Put the dead letters' FAILED recipients back to RETRYING, reopen their batches and
    enqueue their chunks once the session commits. The dead letters are removed."""
    letters = await repository.lock_all(session, ids)
    now = utcnow()
    jobs: list[ChunkJob] = []
    revived = 0
    tag = f"dlq{int(now.timestamp())}"
    for letter in letters:
        batch = await repository.lock_batch(session, letter.batch_id)
        if batch is None or batch.status == BatchStatus.CANCELLED:
            await repository.remove(session, letter)
            continue
        rows = await repository.revive_failed(session, letter.recipient_ids, now)
        if rows:
            revived += len(rows)
            batch.failed_count -= len(rows)
            batch.status = BatchStatus.SENDING
            batch.completed_at = None
            # Enqueued after commit: the reconciler's grace starts now.
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
        await repository.remove(session, letter)
    await session.flush()
    enqueue_after_commit(session, queue, jobs, on_failure=on_enqueue_failure)
    return RetryResult(dead_letters=len(letters), recipients=revived, jobs=jobs)


async def purge_dead_letters(
    session: AsyncSession, *, before: datetime | None = None, ids: Sequence[int] | None = None
) -> int:
    return await repository.purge(session, before=before, ids=ids)
