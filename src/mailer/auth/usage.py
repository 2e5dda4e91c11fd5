"""lastUsedAt / usageCount tracking without a write on every request.

Requests only bump an in-memory counter; a background task flushes the totals to the
database every few seconds (and on shutdown) with one UPDATE per key that was used.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.auth import repository
from mailer.db import session_scope
from mailer.models.base import utcnow

log = structlog.get_logger("mailer.auth")


class UsageTracker:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], interval: float = 5.0):
        self._sessionmaker = sessionmaker
        self._interval = interval
        self._pending: dict[str, tuple[int, datetime]] = {}
        self._task: asyncio.Task[None] | None = None

    def record(self, key_id: str) -> None:
        count, _ = self._pending.get(key_id, (0, utcnow()))
        self._pending[key_id] = (count + 1, utcnow())

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            async with session_scope(self._sessionmaker) as session:
                for key_id, (count, last_used) in pending.items():
                    await repository.add_usage(session, key_id, count, last_used)
        except Exception as exc:  # keep the counts for the next try
            log.warning("usage_flush_failed", error=type(exc).__name__)
            for key_id, (count, last_used) in pending.items():
                newer_count, newer_used = self._pending.get(key_id, (0, last_used))
                self._pending[key_id] = (newer_count + count, max(last_used, newer_used))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="api-key-usage")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
