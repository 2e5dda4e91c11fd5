"""The reconciler finds unfinished work in the database and queues it again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from mailer.db import session_scope
from mailer.models import Batch, Recipient, WebhookMessage
from mailer.queue.factory import build_queue
from mailer.worker.reconciler import Reconciler
from tests.fixtures.client import ApiClient
from tests.fixtures.pipeline import create_template, make_recipients, post_batch


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


async def test_finished_batches_are_completed(client: ApiClient, send_key: str) -> None:
    batch_id = await _batch(client, send_key, 2)
    await _age_enqueue(client, batch_id)
    async with session_scope(client.state.sessionmaker) as session:
        await session.execute(
            update(Recipient).where(Recipient.batch_id == batch_id).values(status="SENT")
        )
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
