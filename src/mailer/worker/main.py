"""`mailer worker`: a worker process with signal handling."""

from __future__ import annotations

import asyncio
import signal

import structlog

from mailer.config import Settings
from mailer.db import create_engine, create_sessionmaker
from mailer.logging import configure_logging
from mailer.process_gc import freeze_startup_objects
from mailer.queue.factory import build_queue
from mailer.worker.runtime import create_worker

log = structlog.get_logger("mailer.worker")


async def run_worker(settings: Settings) -> None:
    configure_logging(settings)
    engine = create_engine(settings)
    queue = build_queue(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        worker = await create_worker(settings, create_sessionmaker(engine), queue)
        worker.start()
        freeze_startup_objects()
        await stop.wait()
        log.info("signal_received")
        try:
            await asyncio.wait_for(worker.stop(), timeout=settings.shutdown_timeout + 5)
        except TimeoutError:
            log.error("shutdown_timed_out")
    finally:
        # Bounded, so the process exits within the orchestrator's grace period even if a
        # connection hangs while closing.
        for closing in (queue.close(), engine.dispose()):
            try:
                await asyncio.wait_for(closing, timeout=5)
            except Exception as exc:
                log.warning("close_timed_out", error=type(exc).__name__)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
