"""The JobQueue protocol. A job names work (a chunk of a batch), never carries it.

Implementations: bullmq.py (Redis, production) and local.py (in-process, embedded default).
The database is the truth: losing every job loses nothing, the reconciler re-enqueues.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """Recipients of `batch_id` with seq in [seq_start, seq_end)."""

    batch_id: str
    seq_start: int
    seq_end: int
    # Empty for the first enqueue; the reconciler sets one (a time stamp) so that a chunk can
    # be enqueued again after its earlier job completed, while repeats within one reconcile
    # pass still deduplicate.
    tag: str = ""
    # The transactional lane: the queue serves these before bulk work (queue/lanes.py).
    high: bool = False

    @property
    def job_id(self) -> str:
        # Deterministic, so enqueueing the same chunk twice is a no-op while the job exists.
        base = f"{self.batch_id}-{self.seq_start}"
        return f"{base}-{self.tag}" if self.tag else base


@dataclass(frozen=True, slots=True)
class JobContext:
    attempt: int  # 1-based number of this attempt
    max_attempts: int

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


class RetryJob(Exception):
    """Raised by a handler: transient failure, retry with backoff (uses an attempt)."""


class DelayJob(Exception):
    """Raised by a handler: run the job again after `delay_ms` without using an attempt."""

    def __init__(self, delay_ms: int) -> None:
        super().__init__(f"delayed {delay_ms} ms")
        self.delay_ms = delay_ms


JobHandler = Callable[[ChunkJob, JobContext], Awaitable[None]]


@runtime_checkable
class JobQueue(Protocol):
    async def enqueue(
        self, jobs: Sequence[ChunkJob], *, delay_ms: int = 0, replace_finished: bool = False
    ) -> None:
        """Add jobs; a job whose job_id already exists (waiting, active, delayed, or finished
        recently: completed records are kept a while for this dedupe, failed ones in a bounded
        list) is not added twice. `replace_finished=True` re-adds a job whose record only
        exists as finished: the reconciler uses it when the database says the chunk is still
        unfinished (e.g. claims that expired after the job had completed)."""

    async def pause_all(self, ms: int) -> None:
        """Provider throttling: no worker anywhere starts a job for `ms` milliseconds."""

    async def depth(self) -> int:
        """Jobs waiting, delayed or active."""

    async def has_pending_for(self, batch_id: str) -> bool:
        """Whether a job for this batch is waiting, delayed (a retry's backoff included),
        active, or being enqueued right now (for the reconciler). Never false while such a
        job exists; false once every job of the batch finished or is gone."""

    async def ping(self) -> bool:
        """The backend is reachable."""

    async def run_worker(
        self, handler: JobHandler, *, concurrency: int, high_concurrency: int | None = None
    ) -> None:
        """Process jobs until stop() is called, `concurrency` bulk jobs at a time and
        `high_concurrency` (default `concurrency`) of the high lane's. Handler outcome:
        return = done; RetryJob = retry with exponential backoff and jitter; DelayJob = run
        later, attempt not used; any other exception = treated like RetryJob."""

    async def stop(self, timeout: float) -> None:
        """Stop taking jobs; wait up to `timeout` s for running handlers; jobs not finished
        are released for another worker."""

    async def close(self) -> None:
        """Release connections."""
