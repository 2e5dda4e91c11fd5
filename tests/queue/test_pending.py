"""has_pending_for (what the reconciler trusts to leave a chunk alone) through every state a
job goes through: an enqueue in flight, active, retry backoff (delayed), waiting again,
finished; and the reverse, a job that really is gone must not stay "pending"."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from mailer.queue.base import ChunkJob, JobContext, RetryJob
from mailer.queue.bullmq import _MARK_PENDING_LUA
from tests.queue.helpers import MakeBull, MakeQueue, running, wait_until, wait_until_async

J0 = ChunkJob("b1", 0, 100)


async def test_job_waiting_out_its_retry_backoff_is_pending(make_queue: MakeQueue) -> None:
    """The reconciler asks during the backoff: the job is pending, and it runs exactly
    `attempts` times."""
    queue = make_queue(attempts=2, backoff_ms=1600)  # first retry after 0.8-1.6 s
    attempts: list[int] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        raise RetryJob("451 try later")

    async with running(queue, handler):
        await queue.enqueue([J0])
        await wait_until(lambda: attempts == [1])
        for _ in range(10):  # 0.5 s of the >= 0.8 s backoff
            assert await queue.has_pending_for("b1")
            await asyncio.sleep(0.05)
        assert attempts == [1]
        await wait_until_async(queue.failed_count, 1)
    assert attempts == [1, 2]
    assert not await queue.has_pending_for("b1")


async def test_pending_through_every_transition(make_queue: MakeQueue) -> None:
    """Polled without pause while a job goes active → delayed → waiting → active → ... →
    failed: has_pending_for never says no while the job is not finished."""
    queue = make_queue(attempts=3, backoff_ms=40)
    attempts: list[int] = []

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        await asyncio.sleep(0.005)
        raise RetryJob("transient")

    misses = checks = 0
    async with running(queue, handler, concurrency=2):
        await queue.enqueue([J0])
        while True:
            pending = await queue.has_pending_for("b1")
            checks += 1
            if not pending:
                if await queue.failed_count() == 1:
                    break
                misses += 1
            await asyncio.sleep(0)
    assert attempts == [1, 2, 3]
    assert checks > 20 and misses == 0


async def test_enqueue_in_flight_is_pending_and_stays_visible(make_bull: MakeBull) -> None:
    """Another worker's reconciler asks while an enqueue has recorded its job ids but not
    yet added the jobs (the reconciler runs concurrently with the API's enqueue, or with a
    reconciler of another worker). It must see the chunk as pending, and the job, once
    added, must stay visible: before the fix the question itself dropped the id from the
    batch's pending set, so the job (and its retries) became invisible to every later
    reconcile pass, which then enqueued the chunk a second time."""
    producer, reconciler_view = make_bull(attempts=2), make_bull(attempts=2)
    seen_in_flight: list[bool] = []
    add_bulk = producer._queue.addBulk

    async def add_bulk_after_a_reconcile(jobs: list[dict[str, Any]]) -> Any:
        seen_in_flight.append(await reconciler_view.has_pending_for("b1"))
        return await add_bulk(jobs)

    producer._queue.addBulk = add_bulk_after_a_reconcile
    # The enqueue that marks and adds in two steps (a plain enqueue does both in one
    # MULTI/EXEC, where no one can ask in between: test_one_trip_enqueue below).
    await producer.enqueue([J0], replace_finished=True)
    assert seen_in_flight == [True]
    assert await reconciler_view.has_pending_for("b1")
    assert await reconciler_view.has_pending_for("b1")  # and it stays so


async def test_lost_and_finished_jobs_are_not_pending(make_bull: MakeBull, redis_url: str) -> None:
    """The reverse risk: an id whose job never arrived (an enqueue that died half-way) is
    pending only for the enqueue window, and a finished job at once."""
    queue = make_bull(attempts=2, enqueue_window_ms=400)

    async def fail(jobs: list[dict[str, Any]]) -> Any:
        raise ConnectionError("redis went away mid-enqueue")

    add_bulk = queue._queue.addBulk
    queue._queue.addBulk = fail
    with pytest.raises(ConnectionError):
        await queue.enqueue([ChunkJob("lost", 0, 10)], replace_finished=True)
    queue._queue.addBulk = add_bulk
    assert await queue.has_pending_for("lost")  # could still be on its way
    await asyncio.sleep(0.5)
    assert not await queue.has_pending_for("lost")  # it is not: the reconciler may act

    # A job removed from Redis under the queue (eviction, an operator) is not pending once
    # the enqueue window is over, however long its id stays listed.
    await queue.enqueue([ChunkJob("gone", 0, 10)], delay_ms=60_000)
    await asyncio.sleep(0.5)
    assert await queue.has_pending_for("gone")
    client = aioredis.from_url(redis_url)
    try:
        prefix = f"bull:{queue.name}"
        await client.delete(f"{prefix}:gone-0")
        await client.zrem(f"{prefix}:delayed", "gone-0")
    finally:
        await client.aclose()
    assert not await queue.has_pending_for("gone")

    async def handler(job: ChunkJob, ctx: JobContext) -> None:
        if job.batch_id == "bad":
            raise RetryJob("still broken")

    async with running(queue, handler):
        await queue.enqueue([ChunkJob("good", 0, 1), ChunkJob("bad", 0, 1)])
        await wait_until_async(queue.depth, 0)
    # Finished within the enqueue window: not pending all the same.
    assert not await queue.has_pending_for("good")
    assert not await queue.has_pending_for("bad")


async def test_pending_sets_of_an_older_version_are_read(
    make_bull: MakeBull, redis_url: str
) -> None:
    """Workers of the previous version kept a plain Redis set of job ids per batch: a live
    job listed there is pending, and an enqueue takes the set over."""
    queue = make_bull(attempts=2)
    client = aioredis.from_url(redis_url)
    key = f"bull:{queue.name}:mailer:pending:old"
    try:
        await queue._queue.add("chunk", {"b": "old", "s": 0, "e": 10}, {"jobId": "old-0"})
        await client.sadd(key, "old-0", "old-gone")
        assert await queue.has_pending_for("old")
        await queue.enqueue([ChunkJob("old", 10, 20)])
        assert await client.type(key) == b"zset"
        assert await queue.has_pending_for("old")
        await queue._queue.remove("old-0")
        assert await queue.has_pending_for("old")  # old-10 is still live
    finally:
        await client.aclose()


async def test_one_trip_enqueue_marks_and_adds_together(make_bull: MakeBull) -> None:
    """A plain enqueue is one MULTI/EXEC (the marks, then the jobs): the job and its mark
    are there together, and scripts Redis lost (SCRIPT FLUSH, a restart) are loaded again."""
    queue, view = make_bull(attempts=2), make_bull(attempts=2)
    await queue.enqueue([ChunkJob("one", 0, 10)])
    assert await view.has_pending_for("one")
    assert await queue.depth() == 1
    # A script Redis does not know (as after a restart; not SCRIPT FLUSH, which would
    # reach every user of this server): the NOSCRIPT answer makes the queue load it and
    # run the enqueue again.
    queue._mark_script = queue._client.register_script(_MARK_PENDING_LUA + "\n-- unknown\n")
    assert queue._scripts_loaded
    await queue.enqueue([ChunkJob("two", 0, 10), ChunkJob("two", 10, 20)])
    assert await view.has_pending_for("two")
    assert await queue.depth() == 3
