"""build_queue chooses BullMQ on Redis when REDIS_URL is set."""

from __future__ import annotations

from typing import Any

from mailer.config import Settings, load_settings
from mailer.queue.bullmq import BullQueue
from mailer.queue.factory import build_queue, completed_retention_s
from mailer.queue.local import LocalQueue


def make_settings(**overrides: Any) -> Settings:
    return load_settings(_env_file=None, app_env="test", **overrides)


async def test_without_redis_the_queue_is_in_process() -> None:
    queue = build_queue(make_settings(redis_url=None, job_attempts=4))
    assert isinstance(queue, LocalQueue)
    await queue.close()


async def test_with_redis_the_queue_is_shared(redis_url: str) -> None:
    queue = build_queue(make_settings(redis_url=redis_url, queue_name="fq"))
    try:
        assert isinstance(queue, BullQueue)
        assert queue.name == "fq"
        assert await queue.ping()
    finally:
        await queue.close()


def test_completed_jobs_outlive_the_reconciler_windows() -> None:
    settings = make_settings(claim_lease=900, reconcile_interval=30)
    assert completed_retention_s(settings) >= 2 * 900
    assert completed_retention_s(make_settings()) >= 600
