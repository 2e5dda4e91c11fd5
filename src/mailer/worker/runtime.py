"""A worker: chunk jobs from the queue, the reconciler loop, graceful shutdown.

Used by `mailer worker` (its own process) and by `mailer dev` (inside the API process).
`create_worker` builds one complete (transport started, send rate known); `start()` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mailer.config import Settings, TransportName
from mailer.db import session_scope
from mailer.delivery.chunk import ChunkProcessor
from mailer.delivery.liveness import Liveness, new_worker_id
from mailer.delivery.recorder import Recorder
from mailer.delivery.send_rate import RateLimiter, build_rate_limiter
from mailer.delivery.withdrawals import Withdrawals
from mailer.logging import OutageLog
from mailer.metrics import MetricsRegistry
from mailer.queue.base import JobQueue
from mailer.transports.base import Transport
from mailer.transports.factory import build_transport
from mailer.webhook_endpoints.dispatcher import Dispatcher
from mailer.worker.heartbeats import SentTally, forget_worker
from mailer.worker.reconciler import Reconciler

log = structlog.get_logger("mailer.worker")

RATE_REFRESH_INTERVAL = 300.0


def job_concurrency(settings: Settings) -> int:
    """Chunks in progress at once: enough that sends never wait on a chunk boundary."""
    return 2 + settings.worker_concurrency // settings.chunk_size


async def initial_send_rate(settings: Settings, transport: Transport) -> float | None:
    """SEND_RATE when set (0 = unlimited), else what the provider allows (SES MaxSendRate),
    else unlimited."""
    if settings.send_rate is not None:
        return settings.send_rate or None
    try:
        return await transport.max_send_rate()
    except Exception as exc:
        log.warning("send_rate_unknown", error=type(exc).__name__)
        return None


@dataclass
class Worker:
    """Built by `create_worker`; every part is there before `start()`."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    queue: JobQueue
    transport: Transport
    limiter: RateLimiter
    recorder: Recorder
    processor: ChunkProcessor
    reconciler: Reconciler
    stopping: asyncio.Event
    send_rate: float | None  # messages/s in force; None = unlimited
    liveness: Liveness  # the worker's identity and heartbeat, on which its claims depend
    withdrawals: Withdrawals  # cancellations and suppressions announced since the start
    webhooks: Dispatcher  # outbound webhooks: its own concurrency budget and connections
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _rate_refresh: OutageLog = field(default_factory=lambda: OutageLog(log, "send_rate_refresh"))

    @property
    def worker_id(self) -> str:
        return self.liveness.worker_id

    def start(self) -> None:
        settings = self.settings
        self._tasks.append(asyncio.create_task(self.liveness.run(), name="heartbeat"))
        self.withdrawals.start()
        self.recorder.start()
        self._tasks.append(
            asyncio.create_task(
                self.queue.run_worker(
                    self.processor,
                    concurrency=job_concurrency(settings),
                    # High-lane jobs are small (POST /emails: one to 50 messages) and many:
                    # as many at once as sends may be in flight, so none waits for another.
                    high_concurrency=settings.worker_concurrency,
                ),
                name="queue-worker",
            )
        )
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconciler"))
        self.webhooks.start()
        if settings.send_rate is None and settings.mail_transport is TransportName.SES:
            self._tasks.append(asyncio.create_task(self._refresh_rate(), name="rate-refresh"))
        log.info(
            "worker_started",
            transport=self.transport.name,
            concurrency=settings.worker_concurrency,
            send_rate=self.send_rate,
        )

    async def _refresh_rate(self) -> None:
        while True:
            await asyncio.sleep(RATE_REFRESH_INTERVAL)
            try:
                rate = await self.transport.max_send_rate()
                await self.limiter.set_rate(rate)
            except Exception as exc:  # keep the rate in force; try again next interval
                self._rate_refresh.failed(exc)
            else:
                self.send_rate = rate
                self._rate_refresh.succeeded()

    async def _reconcile_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.reconciler.run_once()
            except Exception as exc:  # database or queue down: try again next round
                log.warning("reconcile_failed", error=type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.settings.reconcile_interval)

    async def stop(self) -> None:
        """Stop taking jobs, let in-flight sends finish within SHUTDOWN_TIMEOUT, release the
        rest (claims go back to PENDING; jobs go back to the queue)."""
        log.info("worker_stopping", timeout=self.settings.shutdown_timeout)
        self.stopping.set()
        await self.queue.stop(self.settings.shutdown_timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # it had died before: say so, then go on stopping
                log.error("worker_task_failed", task=task.get_name(), error=repr(exc))
        # Each part is closed even when another one fails to; what failed is logged.
        closing: dict[str, Callable[[], Awaitable[None]]] = {
            "recorder": lambda: asyncio.wait_for(self.recorder.stop(), timeout=5),
            "webhooks": self.webhooks.stop,
            "transport": self.transport.close,
            "limiter": self.limiter.close,
            "withdrawals": self.withdrawals.stop,
            "heartbeat": self._forget,
        }
        for part, step in closing.items():
            try:
                await step()
            except Exception as exc:
                log.warning("worker_stop_step_failed", part=part, error=type(exc).__name__)
        log.info("worker_stopped")

    async def _forget(self) -> None:
        async with session_scope(self.sessionmaker) as session:
            await forget_worker(session, self.worker_id)


async def create_worker(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    queue: JobQueue,
    *,
    metrics: MetricsRegistry | None = None,
) -> Worker:
    """A worker with every part built: its transport started and its send rate known. The
    caller runs it with `start()` and ends it with `stop()`."""
    transport = build_transport(settings)
    await transport.start()
    rate = await initial_send_rate(settings, transport)
    limiter = build_rate_limiter(settings, rate)
    metrics = metrics or MetricsRegistry()
    recorder = Recorder(sessionmaker)
    recorder.observers.append(metrics.outcome_observer(transport.name))
    tally = SentTally()  # its heartbeats carry it: the console shows each worker's send rate
    recorder.observers.append(tally)
    stopping = asyncio.Event()
    liveness = Liveness(
        sessionmaker,
        new_worker_id(),
        settings.worker_dead_after,
        {"transport": transport.name},
        tally=tally,
    )
    # The first heartbeat before the first claim: claims name a worker seen alive (if the
    # database is away, chunks wait for the first beat that succeeds).
    await liveness.try_beat()
    withdrawals = Withdrawals(_engine_of(sessionmaker))
    processor = ChunkProcessor(
        settings=settings,
        sessionmaker=sessionmaker,
        transport=transport,
        limiter=limiter,
        queue=queue,
        recorder=recorder,
        stopping=stopping,
        liveness=liveness,
        withdrawals=withdrawals,
        metrics=metrics,
    )
    return Worker(
        settings=settings,
        sessionmaker=sessionmaker,
        queue=queue,
        transport=transport,
        limiter=limiter,
        recorder=recorder,
        processor=processor,
        reconciler=Reconciler(settings, sessionmaker, queue, liveness),
        stopping=stopping,
        send_rate=rate,
        liveness=liveness,
        withdrawals=withdrawals,
        webhooks=Dispatcher(settings, sessionmaker),
    )


def _engine_of(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    bind = sessionmaker.kw.get("bind")
    assert isinstance(bind, AsyncEngine), "the worker's sessionmaker is bound to an engine"
    return bind
