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
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.config import Settings
from mailer.db import after_commit, session_scope
from mailer.db.after_commit import Callback
from mailer.delivery.repository import complete_if_done
from mailer.models.base import utcnow
from mailer.queue.base import ChunkJob, JobQueue
from mailer.reputation import service as reputation
from mailer.webhooks import repository as webhooks
from mailer.worker import repository

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
            await webhooks.forget_messages_before(session, utcnow() - WEBHOOK_DEDUPE)
        now = utcnow()
        async with session_scope(self.sessionmaker) as session:
            started_now = await repository.start_due_batches(session, now)
            report.scheduled_started = len(started_now)
            report.claims_expired = await repository.expire_claims(
                session, now - timedelta(seconds=self.settings.claim_lease), now
            )
            sending = await repository.sending_batches(session)
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
                jobs = [
                    ChunkJob(batch_id, c * chunk_size, min(c * chunk_size + chunk_size, total), tag)
                    for c in await repository.unfinished_chunks(session, batch_id, chunk_size)
                ]
                if not jobs:
                    # Nothing unfinished, yet the counters did not say so: trust the rows.
                    if await complete_if_done(session, batch_id, trust_counters=False):
                        report.batches_completed += 1
                    continue
                # Take the re-enqueue before making it: of the workers' reconcilers that
                # saw this batch without a job, one only goes on (and the others' grace
                # starts now). A failed enqueue is made again after the grace.
                if await repository.take_requeue(session, batch_id, enqueued_at):
                    after_commit(session, self._enqueue(jobs, report))
        if report.batches_requeued or report.claims_expired or report.scheduled_started:
            log.info(
                "reconciled",
                scheduled_started=report.scheduled_started,
                claims_expired=report.claims_expired,
                batches_requeued=report.batches_requeued,
                jobs_enqueued=report.jobs_enqueued,
            )
        return report

    def _enqueue(self, jobs: list[ChunkJob], report: ReconcileReport) -> Callback:
        async def enqueue() -> None:
            await self.queue.enqueue(jobs)
            report.batches_requeued += 1
            report.jobs_enqueued += len(jobs)

        return enqueue
