"""A worker: chunk jobs from the queue, the reconciler loop, graceful shutdown.

Used by `mailer worker` (its own process) and by `mailer dev` (inside the API process).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.config import Settings, TransportName
from mailer.db import session_scope
from mailer.delivery.chunk import ChunkProcessor
from mailer.delivery.recorder import Recorder
from mailer.metrics import MetricsRegistry
from mailer.queue.base import JobQueue
from mailer.queue.factory import build_rate_limiter
from mailer.queue.ratelimit import RateLimiter
from mailer.transports.base import Transport
from mailer.transports.factory import build_transport
from mailer.worker.heartbeats import default_worker_id, forget_worker, heartbeat
from mailer.worker.reconciler import Reconciler

log = structlog.get_logger("mailer.worker")

RATE_REFRESH_INTERVAL = 300.0


def job_concurrency(settings: Settings) -> int:
    """Chunks in progress at once: enough that sends never wait on a chunk boundary."""
    return 2 + settings.worker_concurrency // settings.chunk_size


@dataclass
class Worker:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    queue: JobQueue
    transport: Transport | None = None
    limiter: RateLimiter | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    recorder: Recorder | None = None
    reconciler: Reconciler | None = None
    metrics: MetricsRegistry | None = None
    worker_id: str = field(default_factory=default_worker_id)
    send_rate: float | None = None  # messages/s in force; None = unlimited

    async def start(self) -> None:
        settings = self.settings
        if self.transport is None:
            self.transport = build_transport(settings)
        await self.transport.start()
        rate = self.send_rate = await self._initial_rate()
        if self.limiter is None:
            self.limiter = build_rate_limiter(settings, rate)
        if self.metrics is None:
            self.metrics = MetricsRegistry()
        self.recorder = Recorder(self.sessionmaker)
        self.recorder.observers.append(self.metrics.outcome_observer(self.transport.name))
        self.recorder.start()
        processor = ChunkProcessor(
            settings=settings,
            sessionmaker=self.sessionmaker,
            transport=self.transport,
            limiter=self.limiter,
            queue=self.queue,
            recorder=self.recorder,
            stopping=self.stopping,
            metrics=self.metrics,
        )
        self.reconciler = Reconciler(settings, self.sessionmaker, self.queue)
        self._tasks.append(
            asyncio.create_task(
                self.queue.run_worker(processor, concurrency=job_concurrency(settings)),
                name="queue-worker",
            )
        )
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconciler"))
        if settings.send_rate is None and settings.mail_transport is TransportName.SES:
            self._tasks.append(asyncio.create_task(self._refresh_rate(), name="rate-refresh"))
        log.info(
            "worker_started",
            transport=self.transport.name,
            concurrency=settings.worker_concurrency,
            send_rate=rate,
        )

    async def _initial_rate(self) -> float | None:
        if self.settings.send_rate is not None:
            return self.settings.send_rate or None
        assert self.transport is not None
        try:
            return await self.transport.max_send_rate()
        except Exception as exc:
            log.warning("send_rate_unknown", error=type(exc).__name__)
            return None

    async def _refresh_rate(self) -> None:
        while True:
            await asyncio.sleep(RATE_REFRESH_INTERVAL)
            assert self.transport is not None
            assert self.limiter is not None
            with contextlib.suppress(Exception):
                self.send_rate = await self.transport.max_send_rate()
                await self.limiter.set_rate(self.send_rate)

    async def _reconcile_loop(self) -> None:
        assert self.reconciler is not None
        while not self.stopping.is_set():
            try:
                await self.reconciler.run_once()
            except Exception as exc:  # database or queue down: try again next round
                log.warning("reconcile_failed", error=type(exc).__name__)
            with contextlib.suppress(Exception):
                assert self.transport is not None
                await heartbeat(
                    self.sessionmaker, self.worker_id, {"transport": self.transport.name}
                )
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
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.recorder.stop(), timeout=5)
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.close()
        if self.limiter is not None:
            with contextlib.suppress(Exception):
                await self.limiter.close()
        with contextlib.suppress(Exception):
            async with session_scope(self.sessionmaker) as session:
                await forget_worker(session, self.worker_id)
        log.info("worker_stopped")
