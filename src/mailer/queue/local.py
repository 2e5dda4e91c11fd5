"""In-process JobQueue: the embedded default when no Redis is configured.

Same semantics as the BullMQ queue (job-id dedupe, delays, attempts with exponential backoff
and jitter, DelayJob without using an attempt, pause_all, a bounded failed list) but nothing
survives the process: the database is the truth and the reconciler re-enqueues lost work.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from mailer.queue.base import ChunkJob, DelayJob, JobContext, JobHandler
from mailer.queue.retry import retry_delay_ms

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Entry:
    chunk: ChunkJob
    max_attempts: int
    attempts_made: int = 0
    state: str = "waiting"  # waiting | delayed | active
    due: float = 0.0


@dataclass(frozen=True, slots=True)
class FailedJob:
    chunk: ChunkJob
    attempts: int
    error: str


class LocalQueue:
    def __init__(
        self,
        *,
        attempts: int,
        backoff_ms: int,
        keep_completed_s: float = 600.0,
        failed_limit: int = 1000,
    ) -> None:
        self._attempts = max(1, attempts)
        self._backoff_ms = backoff_ms
        self._keep_completed = keep_completed_s
        self._failed_limit = failed_limit
        self._jobs: dict[str, _Entry] = {}  # waiting, delayed or active
        # Waiting jobs per lane: bulk, and high (the transactional lane, served by its own
        # worker loop so that bulk jobs never hold its places).
        self._ready: deque[str] = deque()
        self._ready_high: deque[str] = deque()
        self._delayed: list[tuple[float, int, str]] = []  # heap of (due, seq, job_id)
        self._seq = itertools.count()
        self._per_batch: Counter[str] = Counter()
        self._completed: OrderedDict[str, float] = OrderedDict()  # job_id -> kept until
        self._failed: OrderedDict[str, FailedJob] = OrderedDict()
        self._paused_until = 0.0
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._running: dict[asyncio.Task[None], _Entry] = {}
        self._loops: set[asyncio.Future[None]] = set()

    # Producer side

    async def enqueue(
        self, jobs: Sequence[ChunkJob], *, delay_ms: int = 0, replace_finished: bool = False
    ) -> None:
        now = self._now()
        self._prune_completed(now)
        for job in jobs:
            job_id = job.job_id
            if job_id in self._jobs:
                continue
            if job_id in self._completed or job_id in self._failed:
                if not replace_finished:
                    continue
                self._completed.pop(job_id, None)
                self._failed.pop(job_id, None)
            entry = _Entry(job, self._attempts)
            self._jobs[job_id] = entry
            self._per_batch[job.batch_id] += 1
            self._schedule(entry, now + max(0, delay_ms) / 1000)
        self._notify()

    async def pause_all(self, ms: int) -> None:
        self._paused_until = max(self._paused_until, self._now() + ms / 1000)
        self._notify()

    async def depth(self) -> int:
        return len(self._jobs)

    async def has_pending_for(self, batch_id: str) -> bool:
        return self._per_batch[batch_id] > 0

    async def ping(self) -> bool:
        return True

    async def failed_count(self) -> int:
        return len(self._failed)

    def failed(self) -> list[FailedJob]:
        """Jobs that used all their attempts, oldest first (bounded)."""
        return list(self._failed.values())

    # Worker side

    async def run_worker(
        self, handler: JobHandler, *, concurrency: int, high_concurrency: int | None = None
    ) -> None:
        """One loop per lane: `concurrency` places for bulk jobs, `high_concurrency` (default
        the same) for the high lane's."""
        # Registered before the first await: a stop() from now on waits for these loops.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loops.add(done)
        try:
            await asyncio.gather(
                self._run_lane(handler, concurrency, high=False),
                self._run_lane(handler, high_concurrency or concurrency, high=True),
            )
        finally:
            self._loops.discard(done)
            done.set_result(None)

    async def _run_lane(self, handler: JobHandler, concurrency: int, *, high: bool) -> None:
        slots = asyncio.Semaphore(max(1, concurrency))
        mine: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            mine.discard(task)
            self._running.pop(task, None)
            slots.release()

        try:
            while True:
                await slots.acquire()
                entry = await self._next(high)
                if entry is None:
                    slots.release()
                    break
                task = asyncio.create_task(self._run(handler, entry))
                mine.add(task)
                self._running[task] = entry
                task.add_done_callback(finished)
            if mine:
                await asyncio.wait(set(mine))
        finally:
            for task in mine:
                task.cancel()
            if mine:
                await asyncio.wait(set(mine))

    async def stop(self, timeout: float) -> None:
        self._stopping = True
        self._notify()
        tasks = set(self._running)
        if tasks:
            _, overrun = await asyncio.wait(tasks, timeout=timeout)
            for task in overrun:
                task.cancel()  # _run releases the job back to waiting
            if overrun:
                await asyncio.wait(overrun)
        if self._loops:
            await asyncio.wait(set(self._loops))
        self._stopping = False

    async def close(self) -> None:
        if self._running or self._loops:
            await self.stop(0)

    # Internals

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _notify(self) -> None:
        # Broadcast: every waiter holds the old event; later waiters get a fresh one.
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _lane(self, chunk: ChunkJob) -> deque[str]:
        return self._ready_high if chunk.high else self._ready

    def _schedule(self, entry: _Entry, due: float) -> None:
        if due <= self._now():
            entry.state = "waiting"
            self._lane(entry.chunk).append(entry.chunk.job_id)
        else:
            entry.state = "delayed"
            entry.due = due
            heapq.heappush(self._delayed, (due, next(self._seq), entry.chunk.job_id))

    def _promote_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            due, _, job_id = heapq.heappop(self._delayed)
            entry = self._jobs.get(job_id)
            if entry is not None and entry.state == "delayed" and entry.due == due:
                entry.state = "waiting"
                self._lane(entry.chunk).append(job_id)

    def _prune_completed(self, now: float) -> None:
        while self._completed:
            job_id, until = next(iter(self._completed.items()))
            if until > now:
                break
            del self._completed[job_id]

    def _finish(self, entry: _Entry) -> None:
        job_id = entry.chunk.job_id
        del self._jobs[job_id]
        self._per_batch[entry.chunk.batch_id] -= 1
        if self._per_batch[entry.chunk.batch_id] <= 0:
            del self._per_batch[entry.chunk.batch_id]

    async def _next(self, high: bool = False) -> _Entry | None:
        ready = self._ready_high if high else self._ready
        while not self._stopping:
            now = self._now()
            timeout: float | None = None
            if self._paused_until > now:
                timeout = self._paused_until - now
            else:
                self._promote_due(now)
                if ready:
                    entry = self._jobs[ready.popleft()]
                    entry.state = "active"
                    return entry
                if self._delayed:
                    timeout = max(0.0, self._delayed[0][0] - now)
            event = self._wakeup
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        return None

    async def _run(self, handler: JobHandler, entry: _Entry) -> None:
        chunk = entry.chunk
        ctx = JobContext(attempt=entry.attempts_made + 1, max_attempts=entry.max_attempts)
        try:
            await handler(chunk, ctx)
        except DelayJob as exc:
            self._schedule(entry, self._now() + max(0, exc.delay_ms) / 1000)
        except asyncio.CancelledError:
            # stop() overran its timeout: release the job for the next worker, no attempt used.
            entry.state = "waiting"
            self._lane(chunk).appendleft(chunk.job_id)
            raise
        except Exception as exc:
            entry.attempts_made += 1
            if entry.attempts_made >= entry.max_attempts:
                log.error(
                    "job failed", job_id=chunk.job_id, attempts=entry.attempts_made, error=repr(exc)
                )
                self._finish(entry)
                self._failed[chunk.job_id] = FailedJob(chunk, entry.attempts_made, repr(exc))
                while len(self._failed) > self._failed_limit:
                    self._failed.popitem(last=False)
            else:
                delay = retry_delay_ms(self._backoff_ms, entry.attempts_made)
                log.warning(
                    "job will retry",
                    job_id=chunk.job_id,
                    attempt=ctx.attempt,
                    delay_ms=delay,
                    error=repr(exc),
                )
                self._schedule(entry, self._now() + delay / 1000)
        else:
            self._finish(entry)
            self._completed[chunk.job_id] = self._now() + self._keep_completed
        finally:
            self._notify()
