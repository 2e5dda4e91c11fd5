"""The bullmq internals that mailer.queue.bullmq relies on are still there.

`_Worker` overrides `moveToActive` and `getNextJob` and reads worker state that is not part
of bullmq's documented API; `BullQueue.stop` and `run_worker` reach into the worker too.
pyproject.toml pins bullmq to the minor version these were checked against. When this test
fails after an upgrade, read the new `bullmq/worker.py` against `mailer/queue/bullmq.py`
before changing anything here.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import bullmq
import bullmq.job
import pytest
from bullmq import Job, Queue, Worker

from mailer.queue.bullmq import _Worker

TESTED_MINOR = "3.4"


def _params(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_installed_bullmq_is_the_tested_minor() -> None:
    installed = version("bullmq")
    assert installed.split(".")[:2] == TESTED_MINOR.split("."), (
        f"bullmq {installed} is installed; mailer's overrides were checked against {TESTED_MINOR}.x"
    )


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("moveToActive", ["self", "token"]),
        ("getNextJob", ["self", "token"]),
        ("close", ["self", "force"]),
        ("run", ["self"]),
    ],
)
def test_overridden_and_called_worker_methods_keep_their_signatures(
    name: str, params: list[str]
) -> None:
    method = getattr(Worker, name)
    assert inspect.iscoroutinefunction(method)
    assert _params(method) == params


def test_the_worker_loop_still_goes_through_the_overridden_methods() -> None:
    """run() asks getNextJob for jobs, getNextJob falls back to moveToActive, and
    moveToActive is where the limiter's limitUntil is set: the hooks of gap (b)."""
    assert "self.getNextJob(" in inspect.getsource(Worker.run)
    assert "self.moveToActive(" in inspect.getsource(Worker.getNextJob)
    assert "self.nextJobFromJobData(" in inspect.getsource(Worker.moveToActive)
    assert "self.limitUntil =" in inspect.getsource(Worker.nextJobFromJobData)


def test_other_internals_used() -> None:
    assert _params(Worker.cancelProcessing) == ["self"]
    assert callable(Worker.emit)
    assert inspect.iscoroutinefunction(Job.moveToDelayed)
    assert _params(Job.moveToDelayed)[:3] == ["self", "timestamp", "token"]
    assert inspect.iscoroutinefunction(Queue.rateLimit)
    assert issubclass(bullmq.DelayedError, Exception)
    # The custom backoff strategy is looked up under this settings key.
    assert "backoffStrategy" in inspect.getsource(bullmq.job)


async def test_worker_state_read_by_the_subclass(redis_url: str) -> None:
    async def process(*_: object) -> None:
        return None

    worker = _Worker("internals-check", process, {"autorun": False, "connection": redis_url})
    try:
        assert worker.limitUntil == 0
        assert worker.closing is False
        assert worker.forceClosing is False
        assert isinstance(worker.jobs, set)
        # Gap (a): the blocking connection's pool is reachable to lift its read timeout.
        kwargs = worker.blockingRedisConnection.conn.connection_pool.connection_kwargs
        assert isinstance(kwargs, dict)
        # Gap (c): both connections read the server version before run().
        await worker.blockingRedisConnection.getRedisVersion()
        await worker.redisConnection.getRedisVersion()
    finally:
        await worker.close(force=True)
