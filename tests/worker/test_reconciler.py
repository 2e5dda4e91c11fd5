"""The reconciler finds unfinished work in the database and queues it again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from mailer.db import session_scope
from mailer.models import Batch, Recipient, WebhookMessage
from mailer.queue.base import ChunkJob, JobQueue
from mailer.queue.bullmq import BullQueue
from mailer.queue.factory import build_queue
from mailer.worker.reconciler import Reconciler, ReconcileReport
from mailer.worker.runtime import Worker
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch, wait_batch
from tests.fixtures.smtp_server import SmtpTestServer


async def _batch(c: ApiClient, key: str, count: int, **extra: Any) -> str:
    template_id = await create_template(c.http, key)
    out = (await post_batch(c.http, key, template_id, make_recipients(count), **extra)).json()
    batch_id: str = out["id"]
    return batch_id


async def _age_enqueue(c: ApiClient, batch_id: str) -> None:
    async with session_scope(c.state.sessionmaker) as session:
        await session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(enqueued_at=datetime.now(UTC) - timedelta(minutes=5))
        )


async def test_lost_jobs_are_enqueued_again(client: ApiClient, send_key: str) -> None:
    settings = client.state.settings.model_copy(update={"chunk_size": 10})
    batch_id = await _batch(client, send_key, 25)
    await _age_enqueue(client, batch_id)
    queue = build_queue(settings)  # a queue that knows nothing: every job was lost
    if settings.redis_url:
        import redis

        redis.Redis.from_url(settings.redis_url).flushdb()
    try:
        report = await Reconciler(settings, client.state.sessionmaker, queue).run_once()
        assert report.batches_requeued == 1
        assert report.jobs_enqueued == 1  # the batch's chunk size (100) covers all 25
        assert await queue.has_pending_for(batch_id)
        again = await Reconciler(settings, client.state.sessionmaker, queue).run_once()
        assert again.jobs_enqueued == 0  # a live job exists: nothing doubled
    finally:
        await queue.close()


async def test_expired_claims_and_due_schedules(client: ApiClient, send_key: str) -> None:
    settings = client.state.settings
    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = await _batch(client, send_key, 2, send_at=send_at)
    running = await _batch(client, send_key, 3)
    long_ago = datetime.now(UTC) - timedelta(seconds=settings.claim_lease + 60)
    async with session_scope(client.state.sessionmaker) as session:
        await session.execute(
            update(Batch)
            .where(Batch.id == scheduled)
            .values(send_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.execute(
            update(Recipient)
            .where(Recipient.batch_id == running, Recipient.seq == 0)
            .values(status="SENDING", claimed_at=long_ago)
        )
        session.add(
            WebhookMessage(
                message_id="old", type="Notification", received_at=long_ago - timedelta(days=8)
            )
        )
    queue = build_queue(settings)
    try:
        report = await Reconciler(settings, client.state.sessionmaker, queue).run_once()
    finally:
        await queue.close()
    assert report.scheduled_started == 1
    assert report.claims_expired == 1
    async with session_scope(client.state.sessionmaker) as session:
        batch = await session.get(Batch, scheduled)
        status = await session.scalar(
            select(Recipient.status).where(Recipient.batch_id == running, Recipient.seq == 0)
        )
        assert await session.get(WebhookMessage, "old") is None
    assert batch is not None and batch.status == "SENDING"
    assert status == "RETRYING"


@pytest.mark.parametrize("counted", [True, False], ids=["counters-kept", "counters-drifted"])
async def test_finished_batches_are_completed(
    client: ApiClient, send_key: str, counted: bool
) -> None:
    """Counters kept (as the worker keeps them): the first check completes the batch. Rows
    finished behind the counters' back: once no job is left, the rows decide."""
    batch_id = await _batch(client, send_key, 2)
    await _age_enqueue(client, batch_id)
    async with session_scope(client.state.sessionmaker) as session:
        await session.execute(
            update(Recipient).where(Recipient.batch_id == batch_id).values(status="SENT")
        )
        if counted:
            await session.execute(update(Batch).where(Batch.id == batch_id).values(sent_count=2))
    if not counted and client.state.settings.redis_url:
        import redis

        redis.Redis.from_url(client.state.settings.redis_url).flushdb()  # no job left
    queue = build_queue(client.state.settings)
    try:
        report = await Reconciler(
            client.state.settings, client.state.sessionmaker, queue
        ).run_once()
    finally:
        await queue.close()
    assert report.batches_completed == 1
    async with session_scope(client.state.sessionmaker) as session:
        batch = await session.get(Batch, batch_id)
    assert batch is not None and batch.status == "COMPLETED"


def _reconcile_inside_enqueue(
    monkeypatch: pytest.MonkeyPatch, queue: JobQueue, reconciler: Reconciler
) -> tuple[list[ReconcileReport], list[str]]:
    """Make a reconcile pass run in the windows of an enqueue that the API (or another
    worker's reconciler) is making: after the batch's commit, before the queue hears of its
    jobs; and, on BullMQ, after the queue's pending bookkeeping, before the jobs are added.
    Returns the passes' reports and every job id enqueued."""
    reports: list[ReconcileReport] = []
    enqueued: list[str] = []
    inside = False

    async def reconcile_once() -> None:
        nonlocal inside
        if not inside:
            inside = True
            try:
                reports.append(await reconciler.run_once())
            finally:
                inside = False

    enqueue = queue.enqueue

    async def spy_enqueue(jobs: Sequence[ChunkJob], **kwargs: Any) -> None:
        enqueued.extend(job.job_id for job in jobs)
        await reconcile_once()
        await enqueue(jobs, **kwargs)

    monkeypatch.setattr(queue, "enqueue", spy_enqueue)
    if isinstance(queue, BullQueue):
        # A plain enqueue marks and adds in one MULTI/EXEC (no window between them); the
        # two-step path (replace_finished, the reconciler's) still has one.
        add_bulk = queue._queue.addBulk

        async def add_bulk_after_a_pass(jobs: list[dict[str, Any]]) -> Any:
            await reconcile_once()
            return await add_bulk(jobs)

        monkeypatch.setattr(queue._queue, "addBulk", add_bulk_after_a_pass)
    return reports, enqueued


async def test_batch_whose_enqueue_is_in_flight_is_left_alone(
    client: ApiClient, send_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconcile pass between the batch's commit and the end of its enqueue (any worker's
    loop may run then) must not enqueue the chunk a second time, and must not lose sight of
    the job for the passes after it."""
    settings = client.state.settings
    queue = client.state.queue
    # On Redis the reconciler of another worker (its own connection); in-process, this one.
    other = build_queue(settings) if isinstance(queue, BullQueue) else queue
    try:
        reconciler = Reconciler(settings, client.state.sessionmaker, other)
        reports, _ = _reconcile_inside_enqueue(monkeypatch, queue, reconciler)
        batch_id = await _batch(client, send_key, 25)
        assert len(reports) == 1
        assert [r.jobs_enqueued for r in reports] == [0] * len(reports)
        assert await queue.depth() == 1
        await _age_enqueue(client, batch_id)  # well past the enqueue grace
        later = await reconciler.run_once()
        assert later.jobs_enqueued == 0  # the job is still seen
        assert await other.has_pending_for(batch_id)
    finally:
        if other is not queue:
            await other.close()


async def test_batch_not_enqueued_after_the_grace_is_enqueued(
    client: ApiClient, send_key: str
) -> None:
    """The reverse: a batch whose enqueue never happened (the API died after the commit, or
    Redis was down) is enqueued by the reconciler once the grace is over."""
    settings = client.state.settings
    batch_id = await _batch(client, send_key, 5)
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    async with session_scope(client.state.sessionmaker) as session:
        await session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(enqueued_at=None, started_at=long_ago, created_at=long_ago)
        )
    queue = build_queue(settings)  # a queue that has never seen the batch's job
    if settings.redis_url:
        import redis

        redis.Redis.from_url(settings.redis_url).flushdb()
    try:
        report = await Reconciler(settings, client.state.sessionmaker, queue).run_once()
        assert report.jobs_enqueued == 1
        assert await queue.has_pending_for(batch_id)
        async with session_scope(client.state.sessionmaker) as session:
            batch = await session.get(Batch, batch_id)
        assert batch is not None and batch.enqueued_at is not None
        again = await Reconciler(settings, client.state.sessionmaker, queue).run_once()
        assert again.jobs_enqueued == 0
    finally:
        await queue.close()


async def test_chunk_in_retry_backoff_is_not_enqueued_again(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end with a worker whose reconciler runs every 0.2 s: a chunk fails
    transiently and waits 1.5-3 s for its retry while the reconciler runs ~10 times (and
    once more inside the API's enqueue). One job only, JOB_ATTEMPTS attempts, one dead
    letter that says so."""
    with SmtpTestServer(rcpt_policy={"user1@example.com": 451}) as server:
        settings = settings_factory(
            mail_transport="smtp",
            smtp_url=server.url(),
            job_attempts=2,
            job_backoff_delay=3000,
            reconcile_interval=0.2,
        )
        async with api_client(settings, embedded_worker=True) as c:
            worker = c.state.extras["worker"]
            assert isinstance(worker, Worker)
            passes = _count_passes(monkeypatch, worker.reconciler)
            reports, enqueued = _reconcile_inside_enqueue(
                monkeypatch, c.state.queue, worker.reconciler
            )
            key = await c.make_key(admin=True)
            template_id = await create_template(c.http, key)
            out = (await post_batch(c.http, key, template_id, make_recipients(3))).json()
            await _wait_rcpt(server, "user1@example.com", 1)
            batch = await wait_batch(c.http, key, out["id"], timeout=30)
            letters = (await c.http.get("/api/v1/admin/dead-letters", headers=auth(key))).json()
            after_dead_letter = len(passes)
            await _wait_until(lambda: len(passes) >= after_dead_letter + 3)  # a few more passes
            depth = await c.state.queue.depth()
        assert server.rcpt_counts["user1@example.com"] == 2
        assert reports and all(r.jobs_enqueued == 0 for r in reports)
        assert enqueued == [f"{out['id']}-0"]
        assert depth == 0
        assert server.rcpt_counts["user0@example.com"] == 1
        assert batch["counts"]["SENT"] == 2 and batch["counts"]["FAILED"] == 1
        assert letters["total"] == 1 and letters["data"][0]["attempts"] == 2


def _count_passes(monkeypatch: pytest.MonkeyPatch, reconciler: Reconciler) -> list[float]:
    """Record the end of every reconcile pass (its loop's or any other)."""
    passes: list[float] = []
    run_once = reconciler.run_once

    async def counted() -> ReconcileReport:
        report = await run_once()
        passes.append(asyncio.get_running_loop().time())
        return report

    monkeypatch.setattr(reconciler, "run_once", counted)
    return passes


async def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def _wait_rcpt(server: SmtpTestServer, address: str, count: int) -> None:
    for _ in range(1000):
        if server.rcpt_counts[address] >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{address} not tried {count} times")
