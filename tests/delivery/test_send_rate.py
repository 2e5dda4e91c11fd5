"""Global send-rate limiters: in-process GCRA and the Redis GCRA shared by processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from bisect import bisect_left

import pytest
import redis.exceptions

from mailer.config import load_settings
from mailer.delivery.send_rate import (
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    build_rate_limiter,
)

UNREACHABLE = "redis://127.0.0.1:1/0"

_CHILD = """
import asyncio, json, sys, time
from mailer.delivery.send_rate import RedisRateLimiter

async def main(url, key, rate, start_at, duration):
    limiter = RedisRateLimiter(url, key, rate)
    stamps = []

    async def sender():
        while True:
            await limiter.acquire()
            now = time.time()
            if now >= start_at + duration:
                return
            stamps.append(now)

    await asyncio.sleep(max(0.0, start_at - time.time()))
    await asyncio.gather(*(sender() for _ in range(20)))
    await limiter.close()
    print(json.dumps(stamps))

url, key, rate, start_at, duration = sys.argv[1:]
asyncio.run(main(url, key, float(rate), float(start_at), float(duration)))
"""


def max_per_second(stamps: list[float]) -> int:
    """The most events in any window [t, t + 1 s) starting at an event (sliding windows)."""
    stamps = sorted(stamps)
    return max(bisect_left(stamps, t + 1.0) - i for i, t in enumerate(stamps))


async def collect(limiter: RateLimiter, duration: float, senders: int = 20) -> list[float]:
    stamps: list[float] = []
    end = time.monotonic() + duration

    async def sender() -> None:
        while True:
            await limiter.acquire()
            now = time.monotonic()
            if now >= end:
                return
            stamps.append(now)

    await asyncio.gather(*(sender() for _ in range(senders)))
    return stamps


async def test_local_limiter_keeps_every_second_within_the_rate() -> None:
    limiter = LocalRateLimiter(100)
    stamps = await collect(limiter, 1.5)
    assert max_per_second(stamps) <= 101
    # Granted, not just bounded: the bound is loose because a loaded machine wakes the
    # senders late (the limiter then gives the late slots up, it never bunches them).
    assert max_per_second(stamps) >= 50
    await limiter.close()


async def test_redis_limiter_is_shared_by_processes(redis_url: str) -> None:
    key = f"test:rate:{uuid.uuid4().hex[:8]}"
    start_at, duration = time.time() + 2.0, 3.0  # both children start sending together
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, redis_url, key, "200", repr(start_at), repr(duration)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    try:
        for child in children:
            out, _ = await asyncio.to_thread(child.communicate, timeout=30)
            assert child.returncode == 0
            outputs.append(json.loads(out))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert all(len(stamps) > 50 for stamps in outputs)  # both processes got their share
    everything = [t for stamps in outputs for t in stamps]
    # Two private buckets would allow 400/s; one shared bucket allows 200/s (+1 %).
    windows = [sum(start_at + k <= t < start_at + k + 1 for t in everything) for k in range(3)]
    assert max(windows) <= 202
    # Any sliding second too, give or take the OS scheduling jitter of the two children.
    assert max_per_second(everything) <= 210
    # And the rate is really granted (loosely: a loaded machine runs the children late).
    assert min(windows) >= 100


async def test_redis_limiter_set_rate_at_runtime(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, f"test:rate:{uuid.uuid4().hex[:8]}", None)
    try:
        assert await limiter.acquire() == 0.0
        await limiter.set_rate(50)
        t0 = time.monotonic()
        for _ in range(6):
            await limiter.acquire()
        assert time.monotonic() - t0 >= 5 * 0.02 - 0.002  # slots 20 ms apart
        await limiter.set_rate(0)
        assert await limiter.acquire() == 0.0
    finally:
        await limiter.close()


@pytest.mark.parametrize("rate", [None, 0, -1])
async def test_unlimited_makes_no_redis_call(rate: float | None) -> None:
    limiter = RedisRateLimiter(UNREACHABLE, "k", rate)  # any Redis call would fail
    try:
        assert [await limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    finally:
        await limiter.close()


async def test_redis_errors_reach_the_caller() -> None:
    limiter = RedisRateLimiter(UNREACHABLE, "k", 10)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.wait_for(limiter.acquire(), 20)
    finally:
        await limiter.close()


async def test_local_limiter_set_rate_at_runtime() -> None:
    limiter = LocalRateLimiter(None)
    assert await limiter.acquire() == 0.0
    await limiter.set_rate(50)
    t0 = time.monotonic()
    for _ in range(6):
        await limiter.acquire()
    assert time.monotonic() - t0 >= 5 * 0.02 - 0.002
    await limiter.set_rate(None)
    assert await limiter.acquire() == 0.0


async def test_the_builder_is_in_process_without_redis() -> None:
    limiter = build_rate_limiter(load_settings(_env_file=None, app_env="test", redis_url=None), 10)
    assert isinstance(limiter, LocalRateLimiter)
    await limiter.close()


async def test_the_builder_shares_the_limiter_through_redis(redis_url: str) -> None:
    settings = load_settings(_env_file=None, app_env="test", redis_url=redis_url, queue_name="fq")
    limiter = build_rate_limiter(settings, None)
    try:
        assert isinstance(limiter, RedisRateLimiter)
        assert await limiter.acquire() == 0.0
    finally:
        await limiter.close()
