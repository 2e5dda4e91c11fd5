"""The JobQueue protocol, run against both implementations (in-process and BullMQ on Redis)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from mailer.queue.base import ChunkJob, DelayJob, JobContext, JobQueue, RetryJob
from tests.queue.helpers import MakeQueue, running, wait_until, wait_until_async

J0 = ChunkJob("b1", 0, 100)
J1 = ChunkJob("b1", 100, 200)
TAGGED = ChunkJob("b1", 0, 100, "1700000000")


async def test_implements_protocol(make_queue: MakeQueue) -> None:
    queue = make_queue()
    assert isinstance(queue, JobQueue)
    assert await queue.ping()


async def test_each_job_runs_once_and_duplicates_are_dropped(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.enqueue([J0, J1, J0])
    await queue.enqueue([J1])
    assert await queue.depth() == 2
    assert await queue.has_pending_for("b1")
    assert not await queue.has_pending_for("b2")
    seen: Counter[ChunkJob] = Counter()

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        seen[job] += 1

    async with running(queue, handler):
        await wait_until(lambda: len(seen) == 2)
        await queue.enqueue([TAGGED])  # same chunk as J0, another job id
        await wait_until(lambda: len(seen) == 3)
    assert seen == {J0: 1, J1: 1, TAGGED: 1}
    assert await queue.depth() == 0
    assert not await queue.has_pending_for("b1")


async def test_completed_job_id_still_dedupes_until_replaced(make_queue: MakeQueue) -> None:
    """Gap (d): a completed job's record keeps deduplicating; replace_finished re-adds it."""
    queue = make_queue()
    seen: list[ChunkJob] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        seen.append(job)

    async with running(queue, handler, concurrency=1):
        await queue.enqueue([J0])
        await wait_until(lambda: seen == [J0])
        await queue.enqueue([J0])  # completed: dropped
        sentinel = ChunkJob("b1", 500, 600)
        await queue.enqueue([sentinel])  # one worker, FIFO: a duplicate would run first
        await wait_until(lambda: sentinel in seen)
        assert seen == [J0, sentinel]
        await queue.enqueue([J0], replace_finished=True)
        await wait_until(lambda: len(seen) == 3)
    assert seen == [J0, sentinel, J0]


async def test_retry_with_backoff_then_success(make_queue: MakeQueue) -> None:
    queue = make_queue(attempts=3, backoff_ms=100)
    calls: list[tuple[int, bool, float]] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        calls.append((ctx.attempt, ctx.is_last_attempt, time.monotonic()))
        if ctx.attempt < 3:
            raise RetryJob("provider hiccup")

    async with running(queue, handler):
        await queue.enqueue([J0])
        await wait_until(lambda: len(calls) == 3)
        await wait_until_async(lambda: queue.depth(), 0)
    assert [(a, last) for a, last, _ in calls] == [(1, False), (2, False), (3, True)]
    # Exponential with jitter in [half, full]: >= 50 ms, then >= 100 ms (1 ms timestamp slack).
    assert calls[1][2] - calls[0][2] >= 0.049
    assert calls[2][2] - calls[1][2] >= 0.099
    assert await queue.failed_count() == 0


async def test_exhausted_attempts_end_in_failed(make_queue: MakeQueue) -> None:
    queue = make_queue(attempts=2, backoff_ms=10)
    contexts: list[JobContext] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        contexts.append(ctx)
        raise ValueError("always broken")  # not RetryJob: treated the same

    async with running(queue, handler):
        await queue.enqueue([J0])
        await wait_until_async(lambda: queue.failed_count(), 1)
    assert [(c.attempt, c.is_last_attempt) for c in contexts] == [(1, False), (2, True)]
    assert await queue.depth() == 0
    assert not await queue.has_pending_for("b1")
    await queue.enqueue([J0])  # the failed record still dedupes
    assert await queue.depth() == 0
    await queue.enqueue([J0], replace_finished=True)
    assert await queue.depth() == 1


async def test_delay_job_does_not_use_an_attempt(make_queue: MakeQueue) -> None:
    queue = make_queue(attempts=2, backoff_ms=10)
    calls: list[tuple[int, float]] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        calls.append((ctx.attempt, time.monotonic()))
        if len(calls) <= 3:
            raise DelayJob(60)
        if len(calls) == 4:
            raise RetryJob("now use one")

    async with running(queue, handler):
        await queue.enqueue([J0])
        await wait_until(lambda: len(calls) == 5)
        await wait_until_async(lambda: queue.depth(), 0)
    assert [a for a, _ in calls] == [1, 1, 1, 1, 2]
    assert all(calls[i + 1][1] - calls[i][1] >= 0.059 for i in range(3))
    assert await queue.failed_count() == 0


async def test_enqueue_with_delay(make_queue: MakeQueue) -> None:
    queue = make_queue()
    started: list[float] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        started.append(time.monotonic())

    async with running(queue, handler):
        t0 = time.monotonic()
        await queue.enqueue([J0], delay_ms=300)
        assert await queue.has_pending_for("b1")
        await wait_until(lambda: len(started) == 1)
    assert started[0] - t0 >= 0.299


async def test_pause_all_holds_every_job_for_the_period(make_queue: MakeQueue) -> None:
    queue = make_queue()
    started: list[float] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        started.append(time.monotonic())

    async with running(queue, handler):
        await asyncio.sleep(0.2)  # the worker is idle
        t0 = time.monotonic()
        await queue.pause_all(600)
        await queue.enqueue([ChunkJob("b1", i, i + 1) for i in range(5)])
        await wait_until(lambda: len(started) == 5)
    assert min(started) - t0 >= 0.599


async def test_concurrency_is_respected(make_queue: MakeQueue) -> None:
    queue = make_queue()
    now_running = 0
    most = 0
    done = 0
    three = asyncio.Event()

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        nonlocal now_running, most, done
        now_running += 1
        most = max(most, now_running)
        if now_running == 3:
            three.set()
        await asyncio.wait_for(three.wait(), 5)
        await asyncio.sleep(0.02)
        now_running -= 1
        done += 1

    async with running(queue, handler, concurrency=3):
        await queue.enqueue([ChunkJob("b1", i, i + 1) for i in range(7)])
        await wait_until(lambda: done == 7)
    assert most == 3


async def test_stop_lets_a_running_handler_finish(make_queue: MakeQueue) -> None:
    queue = make_queue()
    events: list[str] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        events.append("start")
        await asyncio.sleep(0.3)
        events.append("end")

    task = asyncio.create_task(queue.run_worker(handler, concurrency=2))
    await queue.enqueue([J0])
    await wait_until(lambda: events == ["start"])
    await queue.stop(5)
    assert events == ["start", "end"]
    await asyncio.wait_for(task, 5)
    assert await queue.depth() == 0


async def test_stop_releases_a_job_whose_handler_overruns(make_queue: MakeQueue) -> None:
    queue = make_queue()
    runs: list[JobContext] = []
    cancelled = asyncio.Event()

    async def stuck(job: ChunkJob, ctx: JobContext) -> None:
        runs.append(ctx)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(queue.run_worker(stuck, concurrency=1))
    await queue.enqueue([J0])
    await wait_until(lambda: len(runs) == 1)
    await queue.stop(0.2)
    await asyncio.wait_for(task, 5)
    assert cancelled.is_set()
    assert await queue.depth() == 1  # released, not lost
    assert await queue.has_pending_for("b1")

    async def fine(job: ChunkJob, ctx: JobContext) -> None:
        runs.append(ctx)

    async with running(queue, fine):
        await wait_until(lambda: len(runs) == 2)
    assert runs[1].attempt == 1  # an interrupted run does not use an attempt
    assert await queue.depth() == 0


async def test_stop_during_worker_start_up(make_queue: MakeQueue) -> None:
    queue = make_queue()

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        return None

    task = asyncio.create_task(queue.run_worker(handler, concurrency=1))
    await asyncio.sleep(0)  # the worker is starting up
    await queue.stop(1)
    await asyncio.wait_for(task, 5)


async def test_cancelled_worker_keeps_its_job(make_queue: MakeQueue) -> None:
    queue = make_queue()
    started = asyncio.Event()

    async def stuck(job: ChunkJob, ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(queue.run_worker(stuck, concurrency=1))
    await queue.enqueue([J0])
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await queue.depth() == 1  # not lost: released, or active until its lock expires
    assert await queue.has_pending_for("b1")
