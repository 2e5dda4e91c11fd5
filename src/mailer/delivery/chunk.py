"""Processing one chunk job: claim → (suppression re-check) → render → send → record.

Outcomes per recipient:
  sent                 → SENT with the provider's message id
  permanent error      → FAILED now (never retried)
  transient error      → RETRYING; the job is retried with backoff (RetryJob); on the last
                         attempt the chunk's RETRYING recipients → FAILED + a dead letter
  throttled / paused   → released unsent; every worker pauses (queue.pause_all) and the job
                         comes back later without using an attempt (DelayJob)
  suppressed meanwhile → SUPPRESSED, not sent
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.config import Settings
from mailer.db import session_scope
from mailer.delivery import repository
from mailer.delivery.compose import BatchContext, InvalidContent, compose_message
from mailer.delivery.contexts import BatchContexts, PauseCache
from mailer.delivery.recorder import Outcome, Recorder
from mailer.delivery.send_rate import RateLimiter
from mailer.events import bump_metrics, record_events
from mailer.logging import OutageLog
from mailer.metrics import MetricsRegistry
from mailer.models.base import utcnow
from mailer.models.enums import BatchStatus, EventType, MetricKind, RecipientStatus
from mailer.queue.base import ChunkJob, DelayJob, JobContext, JobQueue, RetryJob
from mailer.transports.base import (
    PermanentError,
    SendingPausedError,
    ThrottledError,
    Transport,
    TransportError,
)

log = structlog.get_logger("mailer.delivery")

SENDING_PAUSED_RETRY_S = 60.0


@dataclass
class _ChunkRun:
    attempted: set[int] = field(default_factory=set)  # claimed in this run
    unsent: set[int] = field(default_factory=set)  # claimed, not attempted: released at end
    retrying: int = 0
    last_error: str | None = None
    pause_for: float | None = None


class ChunkProcessor:
    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        transport: Transport,
        limiter: RateLimiter,
        queue: JobQueue,
        recorder: Recorder,
        stopping: asyncio.Event,
        metrics: MetricsRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.transport = transport
        self.limiter = limiter
        self.queue = queue
        self.recorder = recorder
        self.stopping = stopping
        self.metrics = metrics or MetricsRegistry()
        self.contexts = BatchContexts(settings)
        self.pause = PauseCache(sessionmaker)
        self.slots = asyncio.Semaphore(settings.worker_concurrency)
        self.claim_heartbeats = OutageLog(log, "claim_heartbeat")

    async def __call__(self, job: ChunkJob, ctx: JobContext) -> None:
        structlog.contextvars.bind_contextvars(batch_id=job.batch_id, job_id=job.job_id)
        try:
            await self._process(job, ctx)
        finally:
            structlog.contextvars.unbind_contextvars("batch_id", "job_id")

    async def _process(self, job: ChunkJob, ctx: JobContext) -> None:
        lease = self.settings.claim_lease
        async with session_scope(self.sessionmaker) as session:
            bctx = await self.contexts.get(session, job.batch_id)
        if bctx is None or bctx.status != BatchStatus.SENDING:
            return  # gone, scheduled, cancelled or completed: nothing to send
        if bctx.unsubscribe and await self.pause.is_paused():
            # Reputation guard: bulk mail waits; transactional (no unsubscribe) goes on.
            raise DelayJob(int(self.settings.reconcile_interval * 1000))

        run = _ChunkRun()
        heart = asyncio.create_task(self._heartbeat(run))
        try:
            claimed_any = await self._claim_and_send(job, bctx, run)
        finally:
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
            if run.unsent:
                async with session_scope(self.sessionmaker) as session:
                    await repository.release(session, sorted(run.unsent))

        if not claimed_any:
            async with session_scope(self.sessionmaker) as session:
                busy_until = await repository.busy_claims_until(
                    session, job.batch_id, job.seq_start, job.seq_end, lease
                )
            if busy_until is not None:
                # Claimed by a worker that may have died: come back when its lease ends.
                wait_ms = int((busy_until - utcnow()).total_seconds() * 1000) + 100
                raise DelayJob(max(wait_ms, 100))
        if run.pause_for is not None:
            pause_ms = int(run.pause_for * 1000)
            await self.queue.pause_all(pause_ms)
            raise DelayJob(pause_ms)
        if self.stopping.is_set():
            raise DelayJob(0)  # shutting down: hand the rest of the chunk back
        if run.retrying:
            if not ctx.is_last_attempt:
                raise RetryJob(run.last_error or "transient failure")
            await self._exhausted(job, ctx, run.last_error or "transient failure")
        await self._complete(job.batch_id)

    async def _claim_and_send(self, job: ChunkJob, bctx: BatchContext, run: _ChunkRun) -> bool:
        """Claim a few recipients at a time (as many as can be sent at once), so a
        cancellation or a shutdown leaves the rest of the chunk unclaimed."""
        claim_size = max(1, min(self.settings.chunk_size, self.settings.worker_concurrency))
        tasks: list[asyncio.Task[None]] = []
        claimed_any = False
        while not self.stopping.is_set() and run.pause_for is None:
            async with session_scope(self.sessionmaker) as session:
                claimed = await repository.claim_chunk(
                    session,
                    job.batch_id,
                    job.seq_start,
                    job.seq_end,
                    self.settings.claim_lease,
                    limit=claim_size,
                    exclude=run.attempted,
                )
            if not claimed:
                break
            claimed_any = True
            run.attempted.update(r.id for r in claimed)
            run.unsent.update(r.id for r in claimed)
            exhausted = len(claimed) < claim_size
            claimed = await self._drop_suppressed(bctx, run, claimed)
            for recipient in claimed:
                await self.slots.acquire()
                if self.stopping.is_set() or run.pause_for is not None:
                    self.slots.release()
                    break
                run.unsent.discard(recipient.id)
                tasks.append(asyncio.create_task(self._send_one(bctx, run, recipient)))
            if exhausted:
                # Fewer than asked: nothing else in the chunk is claimable (rows another
                # worker holds locked are that worker's claim). Saves a claim round.
                break
        if tasks:
            await asyncio.gather(*tasks)
        return claimed_any

    async def _heartbeat(self, run: _ChunkRun) -> None:
        interval = max(self.settings.claim_lease / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                async with session_scope(self.sessionmaker) as session:
                    await repository.heartbeat(session, sorted(run.unsent))
            except Exception as exc:  # the claims may lapse; the next tick tries again
                self.claim_heartbeats.failed(exc)
            else:
                self.claim_heartbeats.succeeded()

    async def _drop_suppressed(
        self, bctx: BatchContext, run: _ChunkRun, claimed: list[repository.Claimed]
    ) -> list[repository.Claimed]:
        """Suppression is checked again just before sending: by the claim statement itself
        (`Claimed.suppressed`), against the normalized addresses ingest stored."""
        if not any(r.suppressed for r in claimed):
            return claimed
        outcomes = []
        for r in claimed:
            if r.suppressed:
                run.unsent.discard(r.id)
                outcomes.append(
                    Outcome(
                        r.id,
                        bctx.batch_id,
                        r.email,
                        RecipientStatus.SUPPRESSED,
                        r.attempts,
                        data={"reason": "suppressed before send"},
                    )
                )
        await self.recorder.record_many(outcomes)
        return [r for r in claimed if not r.suppressed]

    async def _send_one(self, bctx: BatchContext, run: _ChunkRun, r: repository.Claimed) -> None:
        try:
            outcome = await self._attempt(bctx, run, r)
            if outcome is not None:
                await self.recorder.record(outcome)
        finally:
            self.slots.release()

    async def _attempt(
        self, bctx: BatchContext, run: _ChunkRun, r: repository.Claimed
    ) -> Outcome | None:
        attempts = r.attempts + 1
        try:
            message = await compose_message(bctx, r.id, r.email, r.variables, self.settings)
        except InvalidContent as exc:
            return Outcome(
                r.id,
                bctx.batch_id,
                r.email,
                RecipientStatus.FAILED,
                attempts,
                error=f"invalid content: {exc}",
                data={"permanent": True},
            )
        self.metrics.observe_rate_wait(await self.limiter.acquire())
        slot_at = asyncio.get_running_loop().time()
        if run.pause_for is not None:
            run.unsent.add(r.id)
            return None

        async def on_time() -> None:
            # The limiter spaces sends when they leave, the provider counts them when they
            # arrive: a send held up after its slot (a connection being opened, TLS) takes a
            # fresh slot rather than reach the provider together with later punctual ones.
            if self.limiter.late(slot_at):
                self.metrics.observe_rate_wait(await self.limiter.acquire())

        started = time.perf_counter()
        try:
            result = await self.transport.send(message, on_time)
        except ThrottledError as exc:
            run.unsent.add(r.id)
            run.pause_for = max(run.pause_for or 0.0, exc.retry_after)
            log.warning("provider_throttled", retry_after=exc.retry_after, code=exc.code)
            return None
        except SendingPausedError as exc:
            run.unsent.add(r.id)
            run.pause_for = SENDING_PAUSED_RETRY_S
            log.error("provider_sending_paused", code=exc.code, error=str(exc))
            return None
        except PermanentError as exc:
            log.warning("send_failed", recipient_id=r.id, code=exc.code, permanent=True)
            return Outcome(
                r.id,
                bctx.batch_id,
                r.email,
                RecipientStatus.FAILED,
                attempts,
                error=_describe(exc),
                data={"permanent": True, "code": exc.code},
            )
        except TransportError as exc:
            run.retrying += 1
            run.last_error = _describe(exc)
            log.info("send_retry", recipient_id=r.id, code=exc.code, attempt=attempts)
            return Outcome(
                r.id,
                bctx.batch_id,
                r.email,
                RecipientStatus.RETRYING,
                attempts,
                error=run.last_error,
                data={"code": exc.code},
            )
        except Exception as exc:  # an unclassified failure is treated as transient
            run.retrying += 1
            run.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("send_unexpected_error", error=type(exc).__name__)
            return Outcome(
                r.id,
                bctx.batch_id,
                r.email,
                RecipientStatus.RETRYING,
                attempts,
                error=run.last_error,
            )
        finally:
            self.metrics.observe_send_latency(self.transport.name, time.perf_counter() - started)
        return Outcome(
            r.id,
            bctx.batch_id,
            r.email,
            RecipientStatus.SENT,
            attempts,
            provider_message_id=result.provider_message_id,
            data={"transport": self.transport.name},
        )

    async def _exhausted(self, job: ChunkJob, ctx: JobContext, error: str) -> None:
        async with session_scope(self.sessionmaker) as session:
            failed = await repository.fail_remaining(
                session, job.batch_id, job.seq_start, job.seq_end, error
            )
            if not failed:
                return
            now = utcnow()
            await record_events(
                session,
                [
                    {
                        "batch_id": job.batch_id,
                        "recipient_id": rid,
                        "email": email,
                        "type": EventType.FAILED,
                        "data": {"error": error, "exhausted": True},
                        "created_at": now,
                    }
                    for rid, email in failed
                ],
            )
            await repository.add_batch_counts(session, job.batch_id, {"failed_count": len(failed)})
            await bump_metrics(session, {MetricKind.FAILED: len(failed)})
            await repository.add_dead_letter(
                session,
                job.batch_id,
                job.seq_start,
                job.seq_end,
                [rid for rid, _ in failed],
                error,
                ctx.attempt,
            )
        self.metrics.observe_counts({MetricKind.FAILED: len(failed)}, self.transport.name)
        log.error("chunk_dead_lettered", recipients=len(failed), attempts=ctx.attempt, error=error)

    async def _complete(self, batch_id: str) -> None:
        async with session_scope(self.sessionmaker) as session:
            if await repository.complete_if_done(session, batch_id):
                log.info("batch_completed", batch_id=batch_id)


def _describe(exc: TransportError) -> str:
    code = f"[{exc.code}] " if exc.code else ""
    return f"{code}{exc}"[:2000]
