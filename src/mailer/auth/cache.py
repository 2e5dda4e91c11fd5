"""Authenticated API keys kept in memory, so a request does not query `api_keys`.

A cached key is only as good as the news of its revocation. On PostgreSQL every revocation
sends `NOTIFY mailer_api_keys` in the revoking transaction (PostgreSQL delivers it at
commit, to every process, whichever process or CLI revoked), and each API process LISTENs on
a connection of its own and empties its cache when one arrives. While that connection is
down nothing is cached and every request goes to the database again; it is re-established
in the background, and the cache starts empty. On SQLite (one embedded process, but the CLI
can revoke from another process without telling it) the cache stays off.

A lookup that started before a revocation must not put the key back afterwards: `clear()`
bumps a generation, and `put()` only stores what was read under the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from mailer.auth.principal import Principal
from mailer.db import pg
from mailer.db.dialect import can_listen, notify

log = structlog.get_logger("mailer.auth")

CHANNEL = "mailer_api_keys"
# An upper bound on how long a key is trusted without reading it, whatever happens.
TTL_SECONDS = 60.0
MAX_ENTRIES = 10_000
RECONNECT_SECONDS = 1.0


async def notify_revoked(session: AsyncSession, key_id: str) -> None:
    """Tell every API process (at commit) that a key changed. No-op off PostgreSQL."""
    await notify(session, CHANNEL, key_id)


class KeyCache:
    def __init__(self, engine: AsyncEngine, *, ttl: float = TTL_SECONDS) -> None:
        self._engine = engine
        self._ttl = ttl
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._generation = 0
        self._listening = False
        self._connection: AsyncConnection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._listening

    @property
    def generation(self) -> int:
        return self._generation

    def get(self, digest: str) -> Principal | None:
        if not self._listening:
            return None
        entry = self._entries.get(digest)
        if entry is None:
            return None
        principal, expires = entry
        if time.monotonic() >= expires:
            del self._entries[digest]
            return None
        return principal

    def put(self, digest: str, principal: Principal, generation: int) -> None:
        """Store a key read from the database while `generation` was current."""
        if not self._listening or generation != self._generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (principal, time.monotonic() + self._ttl)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    # -- the LISTEN connection ------------------------------------------------

    async def start(self) -> None:
        if not can_listen(self._engine):
            return
        self._task = asyncio.create_task(self._run(), name="api-key-cache")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    async def _run(self) -> None:
        failing = False  # log a failure once, not on every retry while the database is away
        while True:
            try:
                await self._listen()
                if failing:
                    log.info("api_key_cache_on")
                failing = False
                await self._lost.wait()
                log.warning("api_key_cache_off", reason="listen connection lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: retry, uncached meanwhile
                if not failing:
                    log.warning("api_key_cache_off", reason=type(exc).__name__)
                failing = True
            await self._disconnect()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self) -> None:
        self._lost.clear()
        connection = await self._engine.connect()
        self._connection = connection
        await pg.listen(connection, CHANNEL, self._on_notify, self._on_terminated)
        # Anything revoked while no one listened is unknown: start from nothing.
        self.clear()
        self._listening = True

    async def _disconnect(self) -> None:
        self._listening = False
        self.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()
            with contextlib.suppress(Exception):
                await connection.close()

    def _on_notify(self, *_: Any) -> None:
        self.clear()

    def _on_terminated(self, *_: Any) -> None:
        self._listening = False
        self.clear()
        self._lost.set()
