"""Handing committed work to the queue. A failure here loses nothing: the reconciler finds
SENDING batches with unfinished recipients and no job (once a grace after their start, or
after `enqueued_at` when set, has passed) and enqueues them again."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.db import after_commit
from mailer.queue.base import ChunkJob, JobQueue

log = structlog.get_logger("mailer.dispatch")


def enqueue_after_commit(
    session: AsyncSession,
    queue: JobQueue,
    jobs: Sequence[ChunkJob],
    *,
    on_failure: Callable[[Exception], None] | None = None,
) -> None:
    """Enqueue `jobs` once the session's transaction has committed (never if it rolls
    back). A failed enqueue is logged (and passed to `on_failure`), not raised."""
    if not jobs:
        return

    async def enqueue() -> None:
        try:
            await queue.enqueue(jobs)
        except Exception as exc:
            batch_ids = sorted({job.batch_id for job in jobs})
            log.warning(
                "enqueue_failed", batch_ids=batch_ids, error=type(exc).__name__, jobs=len(jobs)
            )
            if on_failure is not None:
                on_failure(exc)

    after_commit(session, enqueue)
