"""Handing committed work to the queue. A failure here loses nothing: the reconciler finds
batches whose `enqueued_at` is unset (or whose jobs vanished) and enqueues them again."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy import update

from mailer.db import session_scope
from mailer.models import Batch
from mailer.models.base import utcnow
from mailer.queue.base import ChunkJob
from mailer.state import AppState

log = structlog.get_logger("mailer.dispatch")


async def enqueue_batch(state: AppState, batch_id: str, jobs: Sequence[ChunkJob]) -> bool:
    try:
        await state.queue.enqueue(jobs)
    except Exception as exc:
        log.warning("enqueue_failed", batch_id=batch_id, error=type(exc).__name__, jobs=len(jobs))
        return False
    try:
        async with session_scope(state.sessionmaker) as session:
            await session.execute(
                update(Batch).where(Batch.id == batch_id).values(enqueued_at=utcnow())
            )
    except Exception as exc:  # the reconciler will check the queue and skip re-adding
        log.warning("enqueue_mark_failed", batch_id=batch_id, error=type(exc).__name__)
    return True


async def enqueue_jobs(state: AppState, jobs: Sequence[ChunkJob]) -> bool:
    """Enqueue jobs of possibly several batches (dead-letter retries, CLI)."""
    try:
        await state.queue.enqueue(jobs)
    except Exception as exc:
        log.warning("enqueue_failed", error=type(exc).__name__, jobs=len(jobs))
        return False
    return True
