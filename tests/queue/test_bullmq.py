"""BullQueue specifics: the four gaps of the Python bullmq worker, several workers on one
queue, and has_pending_for against Redis state."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from mailer.queue.base import ChunkJob, JobContext, JobHandler
from mailer.queue.bullmq import BullQueue
from tests.queue.helpers import MakeBull, running, wait_until, wait_until_async


async def test_idle_worker_survives_the_socket_timeout(make_bull: MakeBull) -> None:
    """Gap (a): redis-py 8's 5 s socket timeout must not stall a worker idle in BZPOPMIN."""
    queue = make_bull()
    seen: list[float] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        seen.append(time.monotonic())

    async with running(queue, handler):
        await asyncio.sleep(6.1)
        t0 = time.monotonic()
        await queue.enqueue([ChunkJob("b", 0, 1)])
        await wait_until(lambda: len(seen) == 1, timeout=20)
    # Unpatched, the client gives up on its 5 s BZPOPMIN at ~5 s and redis-py's retry sleeps
    # 2 s (then 4, 8, ... and bullmq's 15 s retry delay): the job waits >= ~1 s here.
    # Patched, the server's own timeout returns at 5 s and the next pop is already waiting.
    assert seen[0] - t0 < 0.5


async def test_pause_all_holds_every_worker(make_bull: MakeBull) -> None:
    """Gap (b): every worker honours the pause, and resumes right after it (not after a
    drainDelay-long blocking pop)."""
    a, b = make_bull(), make_bull()
    starts: list[tuple[str, float]] = []

    def handler_for(worker: str) -> JobHandler:
        async def handler(job: ChunkJob, ctx: JobContext) -> None:
            starts.append((worker, time.monotonic()))
            await asyncio.sleep(0.05)

        return handler

    async with (
        running(a, handler_for("a"), concurrency=2),
        running(b, handler_for("b"), concurrency=2),
    ):
        await asyncio.sleep(0.3)  # both idle in their blocking pop
        t0 = time.monotonic()
        await a.pause_all(1500)
        await b.enqueue([ChunkJob("b", i, i + 1) for i in range(20)])
        await wait_until(lambda: len(starts) == 20)
    first = min(t for _, t in starts)
    assert first - t0 >= 1.499
    assert first - t0 < 3.5  # unpatched, the workers would sleep ~5 s in BZPOPMIN
    assert {w for w, _ in starts} == {"a", "b"}


async def test_pause_all_never_shortens_a_pause(make_bull: MakeBull, redis_url: str) -> None:
    queue = make_bull()
    await queue.pause_all(5000)
    await queue.pause_all(100)
    client = aioredis.from_url(redis_url)
    try:
        assert await client.pttl(f"bull:{queue.name}:limiter") > 4000
    finally:
        await client.aclose()


async def test_short_delay_is_not_rounded_to_a_second(make_bull: MakeBull) -> None:
    """Gap (c): the blocking connection knows the server version before run()."""
    queue = make_bull()
    started: list[float] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        started.append(time.monotonic())

    async with running(queue, handler):
        await asyncio.sleep(0.3)  # idle, blocked on the marker
        t0 = time.monotonic()
        await queue.enqueue([ChunkJob("b", 0, 1)], delay_ms=200)
        await wait_until(lambda: len(started) == 1)
    assert 0.199 <= started[0] - t0 < 0.9


async def test_two_workers_never_run_a_job_twice(make_bull: MakeBull) -> None:
    a, b = make_bull(), make_bull()
    active: set[str] = set()
    runs: Counter[str] = Counter()
    overlaps: list[str] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        if job.job_id in active:
            overlaps.append(job.job_id)
        active.add(job.job_id)
        runs[job.job_id] += 1
        await asyncio.sleep(random.uniform(0, 0.02))
        active.discard(job.job_id)

    jobs = [ChunkJob("b", i * 10, i * 10 + 10) for i in range(60)]
    async with running(a, handler, concurrency=4), running(b, handler, concurrency=4):
        await a.enqueue(jobs[:30])
        await b.enqueue(jobs)  # half of them duplicates
        await wait_until(lambda: len(runs) == 60)
        await wait_until_async(a.depth, 0)
    assert overlaps == []
    assert set(runs.values()) == {1}


async def test_overrunning_handler_is_released_to_another_worker(make_bull: MakeBull) -> None:
    a, b = make_bull(), make_bull()
    runs: list[tuple[str, int]] = []
    a_started = asyncio.Event()

    async def stuck(job: ChunkJob, ctx: JobContext) -> None:
        runs.append(("a", ctx.attempt))
        a_started.set()
        await asyncio.sleep(60)

    async def fine(job: ChunkJob, ctx: JobContext) -> None:
        runs.append(("b", ctx.attempt))

    task_a = asyncio.create_task(a.run_worker(stuck, concurrency=1))
    await a.enqueue([ChunkJob("b", 0, 1)])
    await asyncio.wait_for(a_started.wait(), 10)
    async with running(b, fine):
        await asyncio.sleep(0.2)  # b is idle: a holds the only job
        await a.stop(0.3)
        await asyncio.wait_for(task_a, 5)
        await wait_until(lambda: len(runs) == 2)
    assert runs == [("a", 1), ("b", 1)]


async def test_has_pending_for_follows_redis_state(make_bull: MakeBull, redis_url: str) -> None:
    queue = make_bull()
    await queue.enqueue([ChunkJob("b1", 0, 10), ChunkJob("b1", 10, 20)], delay_ms=60_000)
    await queue.enqueue([ChunkJob("b2", 0, 10)])
    assert await queue.has_pending_for("b1")
    assert await queue.has_pending_for("b2")
    assert await queue.depth() == 3
    client = aioredis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    # Every job is gone: nothing may claim to be pending, and the ids are free again.
    assert not await queue.has_pending_for("b1")
    assert not await queue.has_pending_for("b2")
    assert await queue.depth() == 0
    await queue.enqueue([ChunkJob("b1", 0, 10)])
    assert await queue.has_pending_for("b1")
    assert await queue.depth() == 1


async def test_completed_and_failed_jobs_are_not_pending(make_bull: MakeBull) -> None:
    queue = make_bull(attempts=1)

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        if job.batch_id == "bad":
            raise RuntimeError("boom")

    async with running(queue, handler):
        await queue.enqueue([ChunkJob("good", 0, 1), ChunkJob("bad", 0, 1)])
        await wait_until_async(queue.depth, 0)
    assert await queue.failed_count() == 1
    assert not await queue.has_pending_for("good")
    assert not await queue.has_pending_for("bad")


async def test_unreachable_backend_fails_fast() -> None:
    """ping() says so and enqueue() raises, rather than retrying for minutes."""
    queue = BullQueue("redis://127.0.0.1:1/0", "down", attempts=1, backoff_ms=0)
    try:
        assert not await asyncio.wait_for(queue.ping(), 30)
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.wait_for(queue.enqueue([ChunkJob("b", 0, 1)]), 30)
    finally:
        await queue.close()
