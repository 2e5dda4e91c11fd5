"""What a running process holds: settings, database, queue. Typed, stored on app.state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mailer.config import Settings
from mailer.db.pg import DriverPool
from mailer.db.reads import Reads

if TYPE_CHECKING:
    from mailer.auth.cache import KeyCache
    from mailer.auth.ratelimit import KeyRateLimiter
    from mailer.auth.usage import UsageTracker
    from mailer.queue.base import JobQueue
    from mailer.webhooks.sns import SnsVerifier


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    queue: JobQueue
    usage: UsageTracker
    key_limiter: KeyRateLimiter
    key_cache: KeyCache
    sns_verifier: SnsVerifier
    # PostgreSQL: the pool of the hot statements (reads, small POSTs; mailer.db.pg.DriverPool);
    # None on SQLite.
    driver_pool: DriverPool | None = None
    extras: dict[str, object] = field(default_factory=dict)

    def reading(self) -> Reads:
        """A read-only unit of work for a route whose hot path is one hand-written
        PostgreSQL statement (`mailer.db.reads`). Opened in the route rather than as a
        dependency: FastAPI's handling of a dependency that yields cost ~10 % of such a
        request's CPU (bench/api, issue 18)."""
        return Reads(self.driver_pool, self.read_sessionmaker)
