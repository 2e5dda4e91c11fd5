"""Helpers for the queue tests: polling for a condition, a worker running in the background."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from mailer.queue.base import JobHandler, JobQueue
from mailer.queue.bullmq import BullQueue

# What the make_queue and make_bull fixtures (conftest.py) hand a test.
MakeQueue = Callable[..., Any]
MakeBull = Callable[..., BullQueue]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until predicate() holds; fail the test after `timeout` s (a liveness bound)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def wait_until_async(
    get: Callable[[], Awaitable[Any]], expected: object, timeout: float = 10.0
) -> None:
    """Poll an async getter until it returns `expected` (a liveness bound, not a speed one)."""
    deadline = time.monotonic() + timeout
    while (value := await get()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r}, expected {expected!r}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running(
    queue: JobQueue, handler: JobHandler, *, concurrency: int = 4, stop_timeout: float = 5.0
) -> AsyncIterator[asyncio.Task[None]]:
    """Run a worker on `queue` for the duration of the block, then stop it."""
    task = asyncio.create_task(queue.run_worker(handler, concurrency=concurrency))
    try:
        yield task
    finally:
        await queue.stop(stop_timeout)
        await asyncio.wait_for(task, 10)
