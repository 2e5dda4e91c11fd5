"""Build the queue from settings: BullMQ on Redis when REDIS_URL is set, else in-process."""

from __future__ import annotations

import math

from mailer.config import Settings
from mailer.queue.base import JobQueue
from mailer.queue.local import LocalQueue


def completed_retention_s(settings: Settings) -> int:
    """How long a completed job's id keeps deduplicating enqueues: well past the windows in
    which the reconciler or a retried ingest could enqueue the same chunk again."""
    return math.ceil(max(600.0, 2 * settings.claim_lease, 4 * settings.reconcile_interval))


def build_queue(settings: Settings) -> JobQueue:
    keep = completed_retention_s(settings)
    # A job held by a worker that died is found by another worker's stalled-job check within
    # about two lock durations (its lock runs out, then the next check moves it back): a
    # third of WORKER_DEAD_AFTER each, so the job is back about when the worker counts as
    # dead and its claims are released (10 s at the default 30 s).
    lock_ms = int(max(2.0, settings.worker_dead_after / 3) * 1000)
    if settings.redis_url:
        from mailer.queue.bullmq import BullQueue

        return BullQueue(
            settings.redis_url,
            settings.queue_name,
            attempts=settings.job_attempts,
            backoff_ms=settings.job_backoff_delay,
            keep_completed_s=keep,
            lock_duration_ms=lock_ms,
            stalled_interval_ms=lock_ms,
        )
    return LocalQueue(
        attempts=settings.job_attempts,
        backoff_ms=settings.job_backoff_delay,
        keep_completed_s=keep,
    )
