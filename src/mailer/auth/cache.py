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

import time

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from mailer.auth.principal import Principal
from mailer.db.dialect import can_listen, notify
from mailer.db.listener import Listener

log = structlog.get_logger("mailer.auth")

CHANNEL = "mailer_api_keys"
# An upper bound on how long a key is trusted without reading it, whatever happens.
TTL_SECONDS = 60.0
MAX_ENTRIES = 10_000


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
        self._listener = Listener(
            engine, CHANNEL, self, log, ("api_key_cache_on", "api_key_cache_off")
        )

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
        self._listener.start("api-key-cache")

    async def stop(self) -> None:
        await self._listener.stop()

    def on_listening(self) -> None:
        # Anything revoked while no one listened is unknown: start from nothing.
        self.clear()
        self._listening = True

    def on_not_listening(self) -> None:
        self._listening = False
        self.clear()

    def on_notice(self, _payload: str) -> None:
        self.clear()
