"""The reconciler: the database is the truth, the queue only says "go look"
(docs/architecture.md, "Guarantees").

Every RECONCILE_INTERVAL seconds, in every worker (all steps are idempotent):
1. scheduled batches that are due → SENDING, chunks enqueued;
2. SENDING claims of dead workers (no heartbeat for WORKER_DEAD_AFTER), and claims naming
   no worker older than CLAIM_LEASE → RETRYING;
3. SENDING batches with unfinished recipients and no live job → chunks re-enqueued;
   SENDING batches with nothing unfinished → COMPLETED;
4. retention (RETENTION_DAYS): a bounded share of the purge, hourly, or every pass while a
   backlog remains (retention/service.py).
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
from mailer.delivery.liveness import Liveness
from mailer.delivery.repository import complete_if_done
from mailer.models.base import utcnow
from mailer.queue.base import ChunkJob, JobQueue
from mailer.reputation import service as reputation
from mailer.retention import service as retention
from mailer.webhooks import repository as webhooks
from mailer.worker import repository

log = structlog.get_logger("mailer.reconciler")

# A batch enqueued this recently is left alone: its jobs may still be on their way.
ENQUEUE_GRACE = timedelta(seconds=10)
WEBHOOK_DEDUPE = timedelta(days=7)
PURGE_INTERVAL_S = 3600.0
PURGE_BUDGET = 25  # transactions of at most ROWS_PER_TRANSACTION rows per pass


@dataclass
class ReconcileReport:
    scheduled_started: int = 0
    claims_expired: int = 0
    batches_requeued: int = 0
    jobs_enqueued: int = 0
    batches_completed: int = 0
    rows_purged: int = 0


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        queue: JobQueue,
        liveness: Liveness | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.queue = queue
        # Without one (tests, tools) only claims naming no worker can expire.
        self.liveness = liveness
        self._purge_due = 0.0  # monotonic time of the next purge step

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
            live = self.liveness
            report.claims_expired = await repository.expire_claims(
                session,
                now - timedelta(seconds=self.settings.claim_lease),
                now,
                dead_before=live.alive_cutoff() if live is not None and live.judging() else None,
                me=live.key if live is not None else "",
            )
            sending = await repository.sending_batches(session)
        tag = str(int(time.time()))
        grace = min(ENQUEUE_GRACE, timedelta(seconds=3 * self.settings.reconcile_interval))
        for batch_id, chunk_size, total, enqueued_at, started_at, high in sending:
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
                    ChunkJob(
                        batch_id,
                        c * chunk_size,
                        min(c * chunk_size + chunk_size, total),
                        tag,
                        high=high,
                    )
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
        report.rows_purged = await self._purge_some()
        if report.batches_requeued or report.claims_expired or report.scheduled_started:
            log.info(
                "reconciled",
                scheduled_started=report.scheduled_started,
                claims_expired=report.claims_expired,
                batches_requeued=report.batches_requeued,
                jobs_enqueued=report.jobs_enqueued,
            )
        return report

    async def _purge_some(self) -> int:
        """A bounded share of the retention purge (PURGE_BUDGET small transactions): hourly,
        or on every pass while a backlog remains. Every worker may run it; the statements
        are idempotent."""
        days = self.settings.retention_days
        if days <= 0 or time.monotonic() < self._purge_due:
            return 0
        purged = await retention.purge(
            self.sessionmaker, retention.cutoff_for(days), max_transactions=PURGE_BUDGET
        )
        self._purge_due = time.monotonic() + (0 if not purged.finished else PURGE_INTERVAL_S)
        if purged.total():
            log.info(
                "purged",
                recipients=purged.recipients,
                events=purged.events,
                batches=purged.batches,
                dead_letters=purged.dead_letters,
                metrics=purged.metrics,
                finished=purged.finished,
            )
        return purged.total()

    def _enqueue(self, jobs: list[ChunkJob], report: ReconcileReport) -> Callback:
        async def enqueue() -> None:
            await self.queue.enqueue(jobs)
            report.batches_requeued += 1
            report.jobs_enqueued += len(jobs)

        return enqueue
