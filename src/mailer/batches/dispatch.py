"""Handing committed work to the queue. A failure here loses nothing: the reconciler finds
SENDING batches with unfinished recipients and no job (once a grace after their start, or
after `enqueued_at` when set, has passed) and enqueues them again."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from mailer.queue.base import ChunkJob
from mailer.state import AppState

log = structlog.get_logger("mailer.dispatch")


async def enqueue_batch(state: AppState, batch_id: str, jobs: Sequence[ChunkJob]) -> bool:
    # No write after the enqueue: the reconciler's grace counts from the batch's start,
    # which the batch's own insert recorded (a transaction fewer per POST).
    try:
        await state.queue.enqueue(jobs)
    except Exception as exc:
        log.warning("enqueue_failed", batch_id=batch_id, error=type(exc).__name__, jobs=len(jobs))
        return False
    return True


async def enqueue_jobs(state: AppState, jobs: Sequence[ChunkJob]) -> bool:
    """Enqueue jobs of possibly several batches (dead-letter retries, CLI)."""
    try:
        await state.queue.enqueue(jobs)
    except Exception as exc:
        log.warning("enqueue_failed", error=type(exc).__name__, jobs=len(jobs))
        return False
    return True
