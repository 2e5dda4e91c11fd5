"""A worker's identity and heartbeat, on which its claims depend.

Every claim records the worker that made it (`recipients.claimed_by`: the worker's heartbeat
key). A worker heartbeats every WORKER_DEAD_AFTER / 6 seconds (one upsert); a worker whose
heartbeat is older than WORKER_DEAD_AFTER is dead, and its claims may be taken by others.
A live worker keeps its claims however long its sends take.

A worker only judges others dead once its own heartbeats have succeeded without a gap for
WORKER_DEAD_AFTER: after a database outage every heartbeat is old, and the live workers must
get theirs in before anyone's claims are taken.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.logging import OutageLog
from mailer.models.base import utcnow
from mailer.worker.heartbeats import WORKER_PREFIX, SentTally, heartbeat

log = structlog.get_logger("mailer.liveness")

_KEY_MAX = 64  # system_state.key and recipients.claimed_by length


def new_worker_id() -> str:
    """hostname:pid:random, cut from the left to fit. The random part makes every start a
    new identity: a restarted container often has the same hostname and pid, and must not
    pass for the worker that died (whose claims are to be released)."""
    ident = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    return ident[-(_KEY_MAX - len(WORKER_PREFIX)) :]


def worker_key(worker_id: str) -> str:
    """The heartbeat row's key, which claims record."""
    return (WORKER_PREFIX + worker_id)[:_KEY_MAX]


class Liveness:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        worker_id: str,
        dead_after: float,
        info: dict[str, str] | None = None,
        tally: SentTally | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.worker_id = worker_id
        self.key = worker_key(worker_id)
        self.dead_after = dead_after
        self.interval = dead_after / 6
        self.info = dict(info or {})
        self.tally = tally  # its send count, carried by every heartbeat
        self._loop = asyncio.get_running_loop
        self._since: float | None = None  # loop time of the first beat of the current run
        self._last: float | None = None
        self._outage = OutageLog(log, "worker_heartbeat")

    async def beat(self) -> None:
        """One heartbeat; raises if the database does not take it."""
        started = self._loop().time()
        try:
            info = self.info if self.tally is None else {**self.info, **self.tally.beat(utcnow())}
            await heartbeat(self._sessionmaker, self.worker_id, info)
        except Exception:
            self._since = None
            raise
        if self._since is None or self._last is None or started - self._last > 2 * self.interval:
            self._since = started  # a gap: others may have missed beats too
        self._last = started

    async def try_beat(self) -> bool:
        """One heartbeat; a failure is logged once per outage (and its end), not raised."""
        try:
            await self.beat()
        except Exception as exc:  # database away: claims wait, the next beat tries again
            self._outage.failed(exc)
            return False
        self._outage.succeeded()
        return True

    async def run(self) -> None:
        """Heartbeat forever (a task of the worker)."""
        while True:
            await asyncio.sleep(self.interval)
            await self.try_beat()

    def has_beaten(self) -> bool:
        """A heartbeat row exists: claims made now name a worker others see alive."""
        return self._last is not None

    def judging(self) -> bool:
        """Whether this worker may now take dead workers' claims."""
        if self._since is None or self._last is None:
            return False
        now = self._loop().time()
        return now - self._last <= 2 * self.interval and now - self._since >= self.dead_after

    def judging_in(self) -> float:
        """Seconds until judging() may become true (0 when it is)."""
        if self.judging():
            return 0.0
        if self._since is None:
            return self.dead_after
        return max(self.interval, self.dead_after - (self._loop().time() - self._since))

    def alive_cutoff(self) -> datetime:
        """Heartbeats older than this are dead workers'."""
        return utcnow() - timedelta(seconds=self.dead_after)
