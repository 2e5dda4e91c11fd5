"""The worker's webhook dispatcher: due outbox rows out to their endpoints.

It runs beside the email sender in every worker with a budget of its own
(WEBHOOK_CONCURRENCY requests in flight, its own connection pool): a slow or dead receiver
takes webhook slots only, never an email slot. Only the deliveries in flight are in memory;
everything waiting is a row in `webhook_deliveries`.

A claim leases rows for WEBHOOK_LEASE seconds (attempts + 1; SKIP LOCKED on PostgreSQL):
if the worker dies, the rows are due again when the lease runs out, so delivery is at
least once. Results are written in groups (one transaction for all results arriving
together). Retries follow WEBHOOK_RETRY_DELAYS (with ±20 % jitter; a 429/503's Retry-After
wins); after the last the delivery is FAILED. 410 Gone disables the endpoint; an endpoint
whose every attempt failed for WEBHOOK_DISABLE_AFTER_DAYS is disabled with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.config import Settings
from mailer.db import session_scope
from mailer.logging import OutageLog
from mailer.models import WebhookDelivery, WebhookEndpoint
from mailer.models.base import utcnow
from mailer.models.webhook_endpoint import DeliveryState
from mailer.webhook_endpoints import payloads, repository
from mailer.webhook_endpoints.sender import Attempt, Sender

log = structlog.get_logger("mailer.webhooks.outbound")

CLAIM_MAX = 500
HOUSEKEEPING_INTERVAL = 30.0
RETENTION_BATCH = 5000
MAX_RETRY_AFTER = 36000.0


def secrets_in_force(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The current secret, and the previous one while its rotation overlap lasts."""
    out = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > now:
        out.append(endpoint.previous_secret)
    return out


@dataclass(frozen=True, slots=True)
class Job:
    delivery_id: int
    endpoint_id: str
    event_id: str
    attempt: int
    url: str
    secrets: tuple[str, ...]
    body: str


@dataclass(frozen=True, slots=True)
class Result:
    job: Job
    attempt: Attempt
    at: datetime


def next_delay(attempt_number: int, delays: list[float], retry_after: float | None) -> float | None:
    """Seconds before the next attempt after failed attempt `attempt_number` (1-based);
    None when the retries are used up."""
    if attempt_number > len(delays):
        return None
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER)
    return delays[attempt_number - 1] * random.uniform(0.8, 1.2)


def result_row(result: Result, delays: list[float]) -> dict[str, object]:
    """The delivery's columns after an attempt."""
    attempt, job = result.attempt, result.job
    row: dict[str, object] = {
        "id": job.delivery_id,
        "leased_until": None,
        "last_attempt_at": result.at,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "latency_ms": attempt.latency_ms,
        "response": attempt.response,
    }
    if attempt.ok:
        row.update(state=DeliveryState.DELIVERED, next_attempt_at=None)
    elif attempt.gone:
        row.update(state=DeliveryState.FAILED, next_attempt_at=None)
    else:
        delay = next_delay(job.attempt, delays, attempt.retry_after)
        if delay is None:
            row.update(state=DeliveryState.FAILED, next_attempt_at=None)
        else:
            row.update(
                state=DeliveryState.PENDING, next_attempt_at=result.at + timedelta(seconds=delay)
            )
    return row


async def write_results(session: AsyncSession, results: list[Result], settings: Settings) -> None:
    """Record attempts: each delivery's state, and what they say about their endpoints."""
    delays = settings.webhook_retry_delays
    await repository.save_results(session, [result_row(r, delays) for r in results])
    ok = sorted({r.job.endpoint_id for r in results if r.attempt.ok})
    failing = sorted({r.job.endpoint_id for r in results if not r.attempt.ok} - set(ok))
    gone = sorted({r.job.endpoint_id for r in results if r.attempt.gone})
    now = utcnow()
    await repository.mark_endpoints_ok(session, ok)
    await repository.mark_endpoints_failing(session, failing, now)
    if gone:
        await repository.disable_endpoints(session, gone, "the endpoint answered 410 Gone", now)
        log.warning("webhook_endpoint_disabled", endpoints=gone, reason="410 Gone")


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        sender: Sender | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.concurrency = settings.webhook_concurrency
        self.sender = sender or Sender(
            timeout=settings.webhook_timeout,
            allow_private=settings.webhook_allow_private,
            limit=settings.webhook_concurrency,
        )
        self._inflight: set[asyncio.Task[None]] = set()
        self._per_endpoint: Counter[str] = Counter()  # requests in flight per endpoint
        self._slot_free = asyncio.Event()
        self._results: list[Result] = []
        self._results_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._claims = OutageLog(log, "webhook_claim")
        self._housekeeping = OutageLog(log, "webhook_housekeeping")
        self.delivered = 0  # attempts answered 2xx (for benchmarks and tests)
        self.attempted = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="webhook-claims"),
            asyncio.create_task(self._write_loop(), name="webhook-results"),
            asyncio.create_task(self._housekeeping_loop(), name="webhook-housekeeping"),
        ]

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming, give requests in flight `timeout` to finish, write their results.
        Anything unfinished keeps its lease and is attempted again when it runs out."""
        claims = self._tasks[0] if self._tasks else None
        if claims is not None:
            claims.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claims
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._results:
            with contextlib.suppress(Exception):
                await self._flush(self._take_results())
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sender.close()

    # -- claiming ----------------------------------------------------------------------

    async def claim(self, limit: int, exclude: Sequence[str] = ()) -> list[Job]:
        """Lease up to `limit` due deliveries (none of the endpoints in `exclude`)."""
        now = utcnow()
        lease_until = now + timedelta(seconds=self.settings.webhook_lease)
        async with session_scope(self.sessionmaker) as session:
            rows = await repository.claim_due(session, now, lease_until, limit, exclude)
            if not rows:
                return []
            await payloads.compose(session, rows)
            endpoints = await repository.endpoints_by_id(
                session, sorted({r.endpoint_id for r in rows})
            )
            return [job for r in rows if (job := _job(r, endpoints, now)) is not None]

    async def _claim_loop(self) -> None:
        poll = self.settings.webhook_poll_interval
        # Claim in batches: with requests in flight, wait until a quarter of the budget is
        # free rather than claiming one row per transaction as slots free up one by one.
        # One endpoint has at most WEBHOOK_ENDPOINT_CONCURRENCY of the slots, so a receiver
        # that hangs cannot take the budget of the others.
        cap = min(self.settings.webhook_endpoint_concurrency, self.concurrency)
        batch = max(1, min(self.concurrency, cap) // 4)
        while True:
            per_endpoint = self._per_endpoint
            saturated = sorted(e for e, n in per_endpoint.items() if n >= cap)
            room = min((cap - n for n in per_endpoint.values() if 0 < n < cap), default=cap)
            want = min(self.concurrency - len(self._inflight), CLAIM_MAX, room)
            if want < batch and self._inflight:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._slot_free.clear()
            try:
                jobs = await self.claim(want, saturated)
            except Exception as exc:  # the database is away: try again after a pause
                self._claims.failed(exc)
                await asyncio.sleep(poll)
                continue
            self._claims.succeeded()
            for job in jobs:
                task = asyncio.create_task(self._deliver(job))
                self._inflight.add(task)
                self._per_endpoint[job.endpoint_id] += 1
                task.add_done_callback(functools.partial(self._done, job.endpoint_id))
            if len(jobs) < want:
                # Nothing more is due (or only for endpoints at their share): look again
                # after the poll interval, or as soon as a request ends (it may free the
                # share of an endpoint with rows waiting).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_free.wait(), poll)

    def _done(self, endpoint_id: str, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        left = self._per_endpoint[endpoint_id] - 1
        if left > 0:
            self._per_endpoint[endpoint_id] = left
        else:
            del self._per_endpoint[endpoint_id]
        self._slot_free.set()

    async def _deliver(self, job: Job) -> None:
        attempt = await self.sender.send(job.url, job.secrets, job.event_id, job.body)
        self.attempted += 1
        if attempt.ok:
            self.delivered += 1
        self._results.append(Result(job, attempt, utcnow()))
        self._results_ready.set()

    # -- results -----------------------------------------------------------------------

    def _take_results(self) -> list[Result]:
        results, self._results = self._results, []
        return results

    async def _flush(self, results: list[Result]) -> None:
        async with session_scope(self.sessionmaker) as session:
            await write_results(session, results, self.settings)

    async def _write_loop(self) -> None:
        delay = 0.05
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            while self._results:
                results = self._take_results()
                while True:
                    try:
                        await self._flush(results)
                        break
                    except Exception as exc:
                        log.warning(
                            "webhook_results_write_failed_retrying",
                            error=type(exc).__name__,
                            rows=len(results),
                        )
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                delay = 0.05

    # -- housekeeping ------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Disable endpoints failing for too long; drop rows of deleted endpoints, and
        finished deliveries older than RETENTION_DAYS (in small transactions)."""
        now = utcnow()
        days = self.settings.webhook_disable_after_days
        async with session_scope(self.sessionmaker) as session:
            stale = await repository.failing_since_before(session, now - timedelta(days=days))
            if stale:
                reason = f"every delivery failed for {days:g} days"
                await repository.disable_endpoints(session, stale, reason, now)
                log.warning("webhook_endpoint_disabled", endpoints=stale, reason=reason)
            await repository.delete_orphans(session)
        if self.settings.retention_days > 0:
            cutoff = now - timedelta(days=self.settings.retention_days)
            while True:
                async with session_scope(self.sessionmaker) as session:
                    deleted = await repository.delete_finished_before(
                        session, cutoff, RETENTION_BATCH
                    )
                if deleted < RETENTION_BATCH:
                    break

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                await self.housekeeping()
            except Exception as exc:
                self._housekeeping.failed(exc)
            else:
                self._housekeeping.succeeded()
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)


def _job(row: WebhookDelivery, endpoints: dict[str, WebhookEndpoint], now: datetime) -> Job | None:
    endpoint = endpoints.get(row.endpoint_id)
    if endpoint is None or row.payload is None:
        return None
    return Job(
        delivery_id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        attempt=row.attempts,
        url=endpoint.url,
        secrets=tuple(secrets_in_force(endpoint, now)),
        body=row.payload,
    )
