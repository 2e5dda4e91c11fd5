"""Rate slots for two lanes: transactional (high priority) first, bulk never below its share.

Under SEND_RATE every send waits for a slot of the shared limiter (send_rate.py). Without
this, slots would go in order of asking, so a password reset would wait behind the bulk
sends that asked before it. `LaneArbiter` stands in front of the limiter in each worker
process: it keeps one limiter acquire going per waiting send and, as each slot comes, gives
it to a waiting transactional send first, except that while both lanes wait bulk gets at
least `bulk_min_share` of the slots (BULK_MIN_SHARE): after each transactional grant bulk
earns share / (1 - share) of a slot, and a whole earned slot goes to bulk. With no rate
set, every acquire returns at once and the arbiter steps aside.
"""

from __future__ import annotations

import asyncio
from collections import deque

from mailer.delivery.send_rate import RateLimiter


class LaneArbiter:
    def __init__(self, limiter: RateLimiter, bulk_min_share: float) -> None:
        self._limiter = limiter
        share = min(max(bulk_min_share, 0.0), 1.0)
        self._earn = 1e9 if share >= 1.0 else share / (1.0 - share)
        self._max_credit = self._earn + 1.0  # earned slots are not hoarded beyond one grant's
        self._waiting: dict[bool, deque[asyncio.Future[None]]] = {True: deque(), False: deque()}
        self._acquiring = 0
        self._credit = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self.granted = {True: 0, False: 0}  # slots given per lane (high: True)

    async def acquire(self, high: bool) -> float:
        """Wait for a send slot for the lane; return seconds waited."""
        if not self._limiter.limited():
            return await self._limiter.acquire()
        loop = asyncio.get_running_loop()
        start = loop.time()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting[high].append(waiter)
        self._fill()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self._waiting[high]:
                self._waiting[high].remove(waiter)
            raise
        return max(0.0, loop.time() - start)

    def _fill(self) -> None:
        """One limiter acquire in flight per waiting send."""
        wanted = len(self._waiting[True]) + len(self._waiting[False])
        while self._acquiring < wanted:
            self._acquiring += 1
            task = asyncio.create_task(self._one_slot())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one_slot(self) -> None:
        try:
            await self._limiter.acquire()
        except Exception as exc:
            self._acquiring -= 1
            waiter = self._pick()
            if waiter is not None:
                waiter.set_exception(exc)
            return
        self._acquiring -= 1
        waiter = self._pick()
        if waiter is not None:
            waiter.set_result(None)
        # Else every waiter went away meanwhile: the slot is unused (we send less, never more).

    def _pick(self) -> asyncio.Future[None] | None:
        high, bulk = self._waiting[True], self._waiting[False]
        if high and (not bulk or self._credit < 1.0):
            if bulk:
                self._credit = min(self._credit + self._earn, self._max_credit)
            self.granted[True] += 1
            return high.popleft()
        if bulk:
            if high:
                self._credit -= 1.0
            self.granted[False] += 1
            return bulk.popleft()
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))


class InFlight:
    """Sends in flight per lane in one worker. While transactional sends are in flight, bulk
    sends beyond `cap` (BULK_MIN_SHARE times WORKER_CONCURRENCY) wait to start: at full speed
    every send's callbacks share the worker's event loop, so fewer bulk sends in flight
    means a transactional send's steps wait behind fewer of theirs."""

    def __init__(self, cap: int) -> None:
        self._cap = max(1, cap)
        self.high = 0
        self.bulk = 0
        self.waiting = 0  # bulk sends held back right now
        self._changed = asyncio.Event()

    async def start(self, high: bool) -> None:
        if high:
            self.high += 1
            return
        while self.high and self.bulk >= self._cap:
            self.waiting += 1
            try:
                await self._changed.wait()
            finally:
                self.waiting -= 1
        self.bulk += 1

    def done(self, high: bool) -> None:
        if high:
            self.high -= 1
        else:
            self.bulk -= 1
        if self.waiting and (not high or self.high == 0):
            # Broadcast: every waiter holds the old event; later waiters get a fresh one.
            self._changed.set()
            self._changed = asyncio.Event()
