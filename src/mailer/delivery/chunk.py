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
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.config import Settings
from mailer.db import session_scope
from mailer.db.dialect import single_statement_writes
from mailer.delivery import repository
from mailer.delivery.compose import BatchContext, InvalidContent, compose_message
from mailer.delivery.contexts import BatchContexts, PauseCache
from mailer.delivery.lanes import InFlight, LaneArbiter
from mailer.delivery.liveness import Liveness
from mailer.delivery.recorder import Outcome, Recorder
from mailer.delivery.send_rate import RateLimiter
from mailer.delivery.withdrawals import Verdict, Withdrawals
from mailer.events import bump_metrics, record_events
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
# Unpaced sends in flight: a claim waits this long for more sends to ask, unless this many
# already have (see _Claims._gather_for).
CLAIM_GATHER_S = 0.05
CLAIM_GATHER_ASKS = 32


@dataclass
class _ChunkRun:
    attempted: set[int] = field(default_factory=set)  # claimed in this run
    unsent: set[int] = field(default_factory=set)  # claimed, not attempted: released at end
    exhausted: bool = False  # a claim found fewer recipients than asked: nothing left
    retrying: int = 0
    last_error: str | None = None
    pause_for: float | None = None


class _Claims:
    """Claims for the sends of one chunk run that are due now, made together: every send
    asks for one recipient once it holds its rate slot; asks that arrive while a claim
    statement runs are served by the next one."""

    def __init__(
        self,
        processor: ChunkProcessor,
        job: ChunkJob,
        run: _ChunkRun,
        ignored: tuple[str, ...] = (),
    ) -> None:
        self._p = processor
        self._ignored = ignored
        self._job = job
        self._run = run
        self._asks: list[asyncio.Future[repository.Claimed | None]] = []
        self._claiming: asyncio.Task[None] | None = None

    async def take(self) -> repository.Claimed | None:
        if self._run.exhausted:
            return None
        ask: asyncio.Future[repository.Claimed | None] = asyncio.get_running_loop().create_future()
        self._asks.append(ask)
        if self._claiming is None or self._claiming.done():
            self._claiming = asyncio.create_task(self._claim())
        return await ask

    def _gather_for(self) -> float:
        """How long a claim waits for more sends to ask (a run's first claim never waits: a
        lone email goes at once). Without a send rate, once sends are in flight, slots free
        one by one: claiming as they ask made a claim statement per 2 or 3 emails and ~40 %
        more worker CPU per email than claims of dozens (bench/deliver ses30). A paced send
        claims at once: its rate slot is now, and holding it back would bunch sends up at
        the provider."""
        if len(self._asks) >= CLAIM_GATHER_ASKS or not self._run.attempted:
            return 0.0
        return 0.0 if self._p.limiter.limited() else CLAIM_GATHER_S

    async def _claim(self) -> None:
        p, job, run = self._p, self._job, self._run
        while self._asks:
            await asyncio.sleep(self._gather_for())
            asks, self._asks = self._asks, []
            if run.exhausted:
                for ask in asks:
                    ask.set_result(None)
                continue
            try:
                async with session_scope(p.sessionmaker) as session:
                    await single_statement_writes(session)  # the claim is one statement
                    claimed = await repository.claim_chunk(
                        session,
                        job.batch_id,
                        job.seq_start,
                        job.seq_end,
                        p.settings.claim_lease,
                        limit=len(asks),
                        worker=p.liveness.key,
                        dead_before=p.liveness.alive_cutoff() if p.liveness.judging() else None,
                        exclude=run.attempted,
                        ignored_reasons=self._ignored,
                    )
            except Exception as exc:
                run.exhausted = True  # stop claiming: the job fails with this error
                for ask in asks:
                    if not ask.cancelled():
                        ask.set_exception(exc)
                continue
            run.attempted.update(r.id for r in claimed)
            if len(claimed) < len(asks):
                # Nothing else in the chunk is claimable now (rows another worker holds
                # locked are that worker's claim).
                run.exhausted = True
            for i, ask in enumerate(asks):
                if ask.cancelled():
                    if i < len(claimed):
                        run.unsent.add(claimed[i].id)
                    continue
                ask.set_result(claimed[i] if i < len(claimed) else None)


class _Withheld(Exception):
    """Raised just before a send: the recipient ends in `status` unsent."""

    def __init__(self, status: RecipientStatus) -> None:
        super().__init__(status)
        self.status = status


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
        liveness: Liveness,
        withdrawals: Withdrawals,
        metrics: MetricsRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.transport = transport
        self.limiter = limiter
        # Transactional sends take rate slots first (BULK_MIN_SHARE aside) and have
        # concurrency places of their own: bulk sends never hold theirs.
        self.lanes = LaneArbiter(limiter, settings.bulk_min_share)
        self.queue = queue
        self.recorder = recorder
        self.stopping = stopping
        self.metrics = metrics or MetricsRegistry()
        self.contexts = BatchContexts(settings)
        self.pause = PauseCache(sessionmaker)
        self.slots = asyncio.Semaphore(settings.worker_concurrency)
        self.high_slots = asyncio.Semaphore(settings.worker_concurrency)
        self.in_flight = InFlight(int(settings.worker_concurrency * settings.bulk_min_share))
        self.liveness = liveness
        self.withdrawals = withdrawals

    async def __call__(self, job: ChunkJob, ctx: JobContext) -> None:
        structlog.contextvars.bind_contextvars(batch_id=job.batch_id, job_id=job.job_id)
        try:
            await self._process(job, ctx)
        finally:
            structlog.contextvars.unbind_contextvars("batch_id", "job_id")

    async def _process(self, job: ChunkJob, ctx: JobContext) -> None:
        if not self.liveness.has_beaten():
            raise DelayJob(int(self.liveness.interval * 1000))  # claims must name a live worker
        bctx = await self.contexts.get(self.sessionmaker, job.batch_id)
        if bctx is None or bctx.status != BatchStatus.SENDING:
            return  # gone, scheduled, cancelled or completed: nothing to send
        if bctx.unsubscribe and await self.pause.is_paused():
            # Reputation guard: bulk mail waits; transactional (no unsubscribe) goes on.
            raise DelayJob(int(self.settings.reconcile_interval * 1000))

        run = _ChunkRun()
        try:
            await self._claim_and_send(job, bctx, run)
        finally:
            if run.unsent:
                async with session_scope(self.sessionmaker) as session:
                    await repository.release(session, sorted(run.unsent))

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
        await self._wait_for_other_claims(job)
        await self._complete(job.batch_id)

    async def _wait_for_other_claims(self, job: ChunkJob) -> None:
        """Recipients of the chunk still SENDING under another worker's claim: if that worker
        is alive it finishes them; if it died, come back when it counts as dead (or, for a
        claim naming no worker, when its lease ends) and send them."""
        async with session_scope(self.sessionmaker) as session:
            await single_statement_writes(session)  # reads only
            busy_until = await repository.busy_claims_until(
                session,
                job.batch_id,
                job.seq_start,
                job.seq_end,
                lease=self.settings.claim_lease,
                dead_after=self.liveness.dead_after,
            )
        if busy_until is None:
            return
        wait_s = max((busy_until - utcnow()).total_seconds(), self.liveness.judging_in())
        raise DelayJob(max(int(wait_s * 1000) + 100, 100))

    async def _claim_and_send(self, job: ChunkJob, bctx: BatchContext, run: _ChunkRun) -> None:
        """One send at a time takes a concurrency slot, then its rate slot, and only then
        claims its recipient (claims of sends due together are made in one statement): no
        recipient waits claimed for a rate slot, so a cancellation, a suppression or a
        shutdown finds the rest of the chunk unclaimed."""
        claims = _Claims(self, job, run, bctx.ignored_suppressions)
        slots = self.high_slots if bctx.high_priority else self.slots
        tasks: list[asyncio.Task[None]] = []
        while not self.stopping.is_set() and run.pause_for is None and not run.exhausted:
            await slots.acquire()
            if self.stopping.is_set() or run.pause_for is not None or run.exhausted:
                slots.release()
                break
            try:
                await self.in_flight.start(bctx.high_priority)
            except BaseException:
                slots.release()
                raise
            slotted = asyncio.Event()
            tasks.append(asyncio.create_task(self._send_one(bctx, run, claims, slotted)))
            # One send of this chunk waits for a rate slot at a time: a slot taken when the
            # chunk turns out to be exhausted is wasted.
            await slotted.wait()
        if tasks:
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _send_one(
        self, bctx: BatchContext, run: _ChunkRun, claims: _Claims, slotted: asyncio.Event
    ) -> None:
        try:
            try:
                self.metrics.observe_rate_wait(await self.lanes.acquire(bctx.high_priority))
            finally:
                slotted.set()
            while not self.stopping.is_set() and run.pause_for is None:
                mark = self.withdrawals.mark()
                r = await claims.take()
                if r is None:
                    return
                # Lateness counts from here: every send waits for its claim about as long
                # (one statement), so that wait does not bunch sends up.
                slot_at = asyncio.get_running_loop().time()
                if r.suppressed:
                    # On the list at the moment of the claim: the slot goes to the next one.
                    await self.recorder.record(
                        Outcome(
                            r.id,
                            bctx.batch_id,
                            r.email,
                            RecipientStatus.SUPPRESSED,
                            r.attempts,
                            data={"reason": "suppressed before send"},
                        )
                    )
                    continue
                outcome = await self._attempt(bctx, run, r, slot_at, mark)
                if outcome is not None:
                    await self.recorder.record(outcome)
                return
        finally:
            self.in_flight.done(bctx.high_priority)
            (self.high_slots if bctx.high_priority else self.slots).release()

    async def _attempt(
        self, bctx: BatchContext, run: _ChunkRun, r: repository.Claimed, slot_at: float, mark: int
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
        if run.pause_for is not None:
            run.unsent.add(r.id)
            return None

        async def on_time() -> None:
            # The limiter spaces sends when they leave, the provider counts them when they
            # arrive: a send held up after its slot (a connection being opened, TLS) takes a
            # fresh slot rather than reach the provider together with later punctual ones.
            if self.limiter.late(slot_at):
                self.metrics.observe_rate_wait(await self.lanes.acquire(bctx.high_priority))
            # The last moment to hold the message back: cancelled or suppressed since the
            # claim (notices in memory; the database only when they may have missed one).
            await self._check_withdrawn(bctx.batch_id, r.email, mark, bctx.ignored_suppressions)

        started = time.perf_counter()
        try:
            result = await self.transport.send(message, on_time)
        except _Withheld as exc:
            log.info("send_withheld", recipient_id=r.id, status=str(exc.status))
            return Outcome(
                r.id,
                bctx.batch_id,
                r.email,
                exc.status,
                r.attempts,
                data={"reason": f"{exc.status.lower()} before send"},
            )
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

    async def _check_withdrawn(
        self, batch_id: str, email: str, mark: int, ignored: tuple[str, ...] = ()
    ) -> None:
        verdict = self.withdrawals.verdict(batch_id, email, mark)
        if verdict is Verdict.CANCELLED:
            raise _Withheld(RecipientStatus.CANCELLED)
        if verdict is Verdict.SUPPRESSED and not ignored:
            raise _Withheld(RecipientStatus.SUPPRESSED)
        if verdict is not Verdict.SEND:
            # A notice names no reason: mail that ignores some asks the database.
            async with session_scope(self.sessionmaker) as session:
                await single_statement_writes(session)  # reads only
                status = await repository.withdrawn_now(session, batch_id, email, ignored)
            if status is not None:
                raise _Withheld(status)

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
