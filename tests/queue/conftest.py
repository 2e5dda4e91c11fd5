"""Queue fixtures: fresh queues on a queue name of their own, closed after the test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from mailer.queue.bullmq import BullQueue
from mailer.queue.local import LocalQueue
from tests.queue.helpers import MakeBull, MakeQueue


@pytest.fixture(params=["local", "bullmq"])
async def make_queue(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[MakeQueue]:
    """The same test on LocalQueue and BullQueue."""
    created: list[LocalQueue | BullQueue] = []
    name = f"t-{uuid.uuid4().hex[:8]}"

    def make(*, attempts: int = 3, backoff_ms: int = 50) -> LocalQueue | BullQueue:
        queue: LocalQueue | BullQueue
        if request.param == "local":
            queue = LocalQueue(attempts=attempts, backoff_ms=backoff_ms)
        else:
            queue = BullQueue(redis_url, name, attempts=attempts, backoff_ms=backoff_ms)
        created.append(queue)
        return queue

    yield make
    for queue in created:
        await queue.close()


@pytest.fixture
async def make_bull(redis_url: str) -> AsyncIterator[MakeBull]:
    """BullQueue instances on one queue name: each is a separate producer/worker/reconciler."""
    created: list[BullQueue] = []
    name = f"t-{uuid.uuid4().hex[:8]}"

    def make(**kwargs: object) -> BullQueue:
        opts: dict[str, object] = {"attempts": 3, "backoff_ms": 50, **kwargs}
        queue = BullQueue(redis_url, name, **opts)  # type: ignore[arg-type]
        created.append(queue)
        return queue

    yield make
    for queue in created:
        await queue.close()
