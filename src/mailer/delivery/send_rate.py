"""Global send-rate limiting, per message (not per job): the RateLimiter protocol, its two
implementations and the builder that picks one from the settings.

Both are GCRA with reservations: each acquire() takes the next free slot on a schedule spaced
exactly 1/rate apart and sleeps until it. A slot is never handed out twice and slots never
bunch up, so no 1-second window holds more than rate + burst sends (plus the caller's own
scheduling jitter). A caller cancelled while sleeping wastes its slot (we send a little less,
never more).

RedisRateLimiter keeps the schedule in one Redis key shared by every process, on Redis's
clock. Concurrent acquire() calls of one process are coalesced: one round trip reserves
consecutive slots for all of them, which keeps the spacing (unlike handing out tokens in
bulk) and makes thousands of acquires per second cheap.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis

from mailer.config import Settings

# KEYS[1]: theoretical arrival time (TAT) of the next slot, in µs of Redis TIME.
# ARGV[1]: emission interval in µs (may be fractional); ARGV[2]: slots to reserve;
# ARGV[3]: burst tolerance in µs. Returns µs from now to the first reserved slot (negative
# means now); slot i is that + i * interval.
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * n
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
           'PX', math.ceil((new_tat - now) / 1000) + 1000)
return math.floor(tat - tolerance - now)
"""
_MAX_BATCH = 256


@runtime_checkable
class RateLimiter(Protocol):
    async def acquire(self) -> float:
        """Wait until one message may be sent; return seconds waited."""

    def late(self, since: float) -> bool:
        """Whether a send whose slot came at `since` (the loop's clock) is now too late to
        go on that slot: it must take a new one rather than bunch up with later sends."""

    async def set_rate(self, rate: float | None) -> None:
        """Change the rate (messages/s); None or <= 0 means unlimited."""

    def limited(self) -> bool:
        """Whether a rate is set (else acquire() returns at once)."""

    async def close(self) -> None: ...


def _lateness_limit(interval: float) -> float:
    """How late after its slot a send may still go. Slots woken later than this (an event
    loop stalled by CPU contention) are given up: a late send could otherwise fall into the
    next second together with punctual ones. Bounded to 10 ms, i.e. at most 1 % of any
    rate's sends can cross a one-second boundary late."""
    return min(max(interval / 2, 0.005), 0.01)


def _interval(rate: float | None) -> float | None:
    return 1.0 / rate if rate is not None and rate > 0 else None


class _Paced:
    """What both limiters share: the interval between sends (None: no limit)."""

    _interval: float | None

    def late(self, since: float) -> bool:
        interval = self._interval
        if interval is None:
            return False
        return asyncio.get_running_loop().time() - since > _lateness_limit(interval)

    async def set_rate(self, rate: float | None) -> None:
        self._interval = _interval(rate)

    def limited(self) -> bool:
        return self._interval is not None


class LocalRateLimiter(_Paced):
    """In-process GCRA for the embedded default (one process sends)."""

    def __init__(self, rate: float | None, *, burst: int = 1) -> None:
        self._interval = _interval(rate)
        self._burst = max(1, burst)
        self._tat = 0.0

    async def acquire(self) -> float:
        interval = self._interval
        if interval is None:
            return 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            now = loop.time()
            tat = max(self._tat, now)
            self._tat = tat + interval  # no await between read and write: asyncio-safe
            slot = tat - (self._burst - 1) * interval
            if slot > now:
                await asyncio.sleep(slot - now)
            if loop.time() - slot <= _lateness_limit(interval):
                return max(0.0, loop.time() - start)
            # Woken too late (a stalled event loop): the slot is spent, take a new one, so
            # that late sends never bunch up with punctual ones.

    async def close(self) -> None:
        return None


class RedisRateLimiter(_Paced):
    """GCRA in one Lua script (EVALSHA) on a key shared by all processes."""

    def __init__(self, redis_url: str, key: str, rate: float | None, *, burst: int = 1) -> None:
        self._key = key
        self._interval = _interval(rate)
        self._burst = max(1, burst)
        self._client: aioredis.Redis = aioredis.from_url(redis_url)
        self._script = self._client.register_script(_GCRA_LUA)
        self._waiting: list[asyncio.Future[float]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def acquire(self) -> float:
        if self._interval is None:
            return 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            slot: asyncio.Future[float] = loop.create_future()
            self._waiting.append(slot)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush())
            deadline = await slot
            wait = deadline - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            interval = self._interval
            if interval is None or loop.time() - deadline <= _lateness_limit(interval):
                return max(0.0, loop.time() - start)
            # Woken too late: the slot is spent (we send a little less, never more).

    async def _flush(self) -> None:
        """Reserve slots for every waiting acquire(), one round trip per _MAX_BATCH."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch = [f for f in self._waiting[:_MAX_BATCH] if not f.done()]
            del self._waiting[:_MAX_BATCH]
            interval = self._interval
            if not batch:
                continue
            if interval is None:  # set_rate(None) meanwhile
                for f in batch:
                    f.set_result(0.0)
                continue
            interval_us = interval * 1e6
            try:
                first_us = await self._script(
                    keys=[self._key],
                    args=[repr(interval_us), len(batch), repr((self._burst - 1) * interval_us)],
                )
            except Exception as exc:  # the callers see Redis's error
                for f in batch:
                    if not f.done():
                        f.set_exception(exc)
                continue
            received = loop.time()
            for i, f in enumerate(batch):
                if not f.done():
                    f.set_result(received + max(0.0, int(first_us) + i * interval_us) / 1e6)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        for f in self._waiting:
            if not f.done():
                f.set_exception(RuntimeError("rate limiter closed"))
        self._waiting.clear()
        await self._client.aclose()


def build_rate_limiter(settings: Settings, rate: float | None) -> RateLimiter:
    """Redis-backed (shared by every worker process) when REDIS_URL is set, else in-process."""
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, f"mailer:{settings.queue_name}:send-rate", rate)
    return LocalRateLimiter(rate)
