"""The worker built by create_worker: complete before start(), and its repeating tasks'
failures are logged once per outage, never swallowed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailer.delivery import liveness
from mailer.delivery.send_rate import LocalRateLimiter, RedisRateLimiter
from mailer.queue.factory import build_queue
from mailer.worker import runtime
from tests.fixtures.logs import captured_logs


async def test_create_worker_builds_every_part(settings_factory: Any, sessionmaker: Any) -> None:
    settings = settings_factory(mail_transport="outbox", send_rate=5)
    queue = build_queue(settings)
    try:
        worker = await runtime.create_worker(settings, sessionmaker, queue)
        try:
            assert worker.transport.name == "outbox"
            assert isinstance(worker.limiter, (LocalRateLimiter, RedisRateLimiter))
            assert worker.send_rate == 5
            assert worker.processor.limiter is worker.limiter
            assert worker.processor.stopping is worker.stopping
        finally:
            await worker.stop()
    finally:
        await queue.close()


async def test_heartbeat_outage_is_logged_once_and_its_end_too(
    settings_factory: Any, sessionmaker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_factory(mail_transport="outbox", worker_dead_after=3)  # beats: 0.5 s
    beats = 0
    heartbeat = liveness.heartbeat

    async def away_for_five_beats(*args: Any, **kwargs: Any) -> None:
        nonlocal beats
        beats += 1
        if beats <= 5:
            raise ConnectionRefusedError("database away")
        await heartbeat(*args, **kwargs)

    monkeypatch.setattr(liveness, "heartbeat", away_for_five_beats)
    queue = build_queue(settings)
    try:
        with captured_logs() as logs:
            worker = await runtime.create_worker(settings, sessionmaker, queue)
            worker.start()
            try:
                for _ in range(2000):
                    if any(e["event"] == "worker_heartbeat_recovered" for e in logs):
                        break
                    await asyncio.sleep(0.01)
            finally:
                await worker.stop()
    finally:
        await queue.close()
    assert beats > 5
    events = [e for e in logs if e["event"].startswith("worker_heartbeat")]
    assert [e["event"] for e in events] == ["worker_heartbeat_failed", "worker_heartbeat_recovered"]
    assert events[0]["error"] == "ConnectionRefusedError"
