"""The reconciler: the database is the truth, the queue only says "go look"
(docs/architecture.md, "Guarantees").

Every RECONCILE_INTERVAL seconds, in every worker (all steps are idempotent):
1. scheduled batches that are due → SENDING, chunks enqueued;
2. SENDING claims older than the lease (a worker died mid-send) → RETRYING;
3. SENDING batches with unfinished recipients and no live job → chunks re-enqueued;
   SENDING batches with nothing unfinished → COMPLETED.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.config import Settings
from mailer.db import session_scope
from mailer.delivery.repository import complete_if_done
from mailer.models import Batch, Recipient, WebhookMessage
from mailer.models.base import utcnow
from mailer.models.enums import UNFINISHED_STATUSES, BatchStatus, RecipientStatus
from mailer.queue.base import ChunkJob, JobQueue
from mailer.reputation import service as reputation

log = structlog.get_logger("mailer.reconciler")

# A batch enqueued this recently is left alone: its jobs may still be on their way.
ENQUEUE_GRACE = timedelta(seconds=10)
WEBHOOK_DEDUPE = timedelta(days=7)


@dataclass
class ReconcileReport:
    scheduled_started: int = 0
    claims_expired: int = 0
    batches_requeued: int = 0
    jobs_enqueued: int = 0
    batches_completed: int = 0


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        queue: JobQueue,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.queue = queue

    async def run_once(self) -> ReconcileReport:
        report = ReconcileReport()
        async with session_scope(self.sessionmaker) as session:
            await reputation.evaluate(session, self.settings)
            # SNS retries a delivery for hours at most: older dedupe ids are no longer needed.
            await session.execute(
                delete(WebhookMessage).where(WebhookMessage.received_at < utcnow() - WEBHOOK_DEDUPE)
            )
        now = utcnow()
        async with session_scope(self.sessionmaker) as session:
            due = await session.execute(
                update(Batch)
                .where(Batch.status == BatchStatus.SCHEDULED, Batch.send_at <= now)
                .values(status=BatchStatus.SENDING, started_at=now)
                .returning(Batch.id)
                .execution_options(synchronize_session=False)
            )
            started_now = set(due.scalars().all())
            report.scheduled_started = len(started_now)
            expired = await session.execute(
                update(Recipient)
                .where(
                    Recipient.status == RecipientStatus.SENDING,
                    Recipient.claimed_at < now - timedelta(seconds=self.settings.claim_lease),
                )
                .values(status=RecipientStatus.RETRYING, claimed_at=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            report.claims_expired = int(expired.rowcount or 0)  # type: ignore[attr-defined]
            sending = (
                await session.execute(
                    select(
                        Batch.id,
                        Batch.chunk_size,
                        Batch.total_recipients,
                        Batch.enqueued_at,
                        func.coalesce(Batch.started_at, Batch.created_at),
                    )
                    .where(Batch.status == BatchStatus.SENDING)
                    .order_by(Batch.created_at)
                    .limit(1000)
                )
            ).all()
        tag = str(int(time.time()))
        grace = min(ENQUEUE_GRACE, timedelta(seconds=3 * self.settings.reconcile_interval))
        for batch_id, chunk_size, total, enqueued_at, started_at in sending:
            # Jobs handed to the queue lately may still be on their way. Not enqueued yet
            # counts from the start: the API enqueues a new batch's chunks just after its
            # commit. Scheduled batches this pass started have no one else to enqueue them.
            since = enqueued_at or (None if batch_id in started_now else started_at)
            if since is not None and now - since < grace:
                continue
            async with session_scope(self.sessionmaker) as session:
                if await complete_if_done(session, batch_id):
                    report.batches_completed += 1
                    continue
                if await self.queue.has_pending_for(batch_id):
                    continue
                starts = (
                    await session.scalars(
                        select(Recipient.seq // chunk_size)
                        .distinct()
                        .where(
                            Recipient.batch_id == batch_id,
                            Recipient.status.in_(UNFINISHED_STATUSES),
                        )
                    )
                ).all()
                jobs = [
                    ChunkJob(
                        batch_id,
                        int(c) * chunk_size,
                        min(int(c) * chunk_size + chunk_size, total),
                        tag,
                    )
                    for c in sorted(starts)
                ]
                if not jobs:
                    # Nothing unfinished, yet the counters did not say so: trust the rows.
                    if await complete_if_done(session, batch_id, trust_counters=False):
                        report.batches_completed += 1
                    continue
                # Take the re-enqueue before making it: of the workers' reconcilers that
                # saw this batch without a job, one only goes on (and the others' grace
                # starts now). A failed enqueue is made again after the grace.
                unchanged = (
                    Batch.enqueued_at.is_(None)
                    if enqueued_at is None
                    else Batch.enqueued_at == enqueued_at
                )
                taken = await session.execute(
                    update(Batch)
                    .where(Batch.id == batch_id, unchanged)
                    .values(enqueued_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if not taken.rowcount:  # type: ignore[attr-defined]
                    continue
            await self.queue.enqueue(jobs)
            report.batches_requeued += 1
            report.jobs_enqueued += len(jobs)
        if report.batches_requeued or report.claims_expired or report.scheduled_started:
            log.info(
                "reconciled",
                scheduled_started=report.scheduled_started,
                claims_expired=report.claims_expired,
                batches_requeued=report.batches_requeued,
                jobs_enqueued=report.jobs_enqueued,
            )
        return report
