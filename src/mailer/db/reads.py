"""`Reads`: the unit of work of a request that only reads, for the API's hot reads.

On PostgreSQL a hot read is one hand-written statement (`mailer.db.pg`). Run through a read
session, the session around it (creating it, checking out its connection, committing,
closing) cost ~100 µs of CPU against ~20 µs for taking a connection from a pool and giving
it back (issue 18, docs/performance.md). So `Reads` hands such a statement a connection of
the process's `pg.DriverPool` (`driver`), without a session or a transaction: each
statement commits on its own, as in a read session. Code paths that need the ORM (every
path on SQLite, and rare ones on PostgreSQL) ask for `session()`, a read session opened on
first use. Both are given back when the unit of work ends.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.db import pg
from mailer.db.engine import session_scope


class Reads:
    """What one read-only unit of work reads through, as an async context manager (a
    class rather than a generator: it runs on every hot read). `driver` is an asyncpg
    connection when there is a driver pool (PostgreSQL; for the statements in
    `mailer.db.pg`), None otherwise."""

    __slots__ = ("_connection", "_pool", "_session", "_session_scope", "_sessionmaker", "driver")

    def __init__(
        self,
        driver_pool: pg.DriverPool | None,
        read_sessionmaker: async_sessionmaker[AsyncSession] | None,
        *,
        session: AsyncSession | None = None,
    ) -> None:
        self._pool = driver_pool
        self._sessionmaker = read_sessionmaker
        self._connection: pg.DriverConnection | None = None
        self._session_scope: AbstractAsyncContextManager[AsyncSession] | None = None
        self._session = session
        self.driver: Any = None

    @classmethod
    def of_session(cls, session: AsyncSession) -> Reads:
        """Reads through a session the caller holds and closes (the portable paths): for
        callers outside a request, such as the CLI."""
        return cls(None, None, session=session)

    async def __aenter__(self) -> Reads:
        if self._pool is not None:
            self._connection = self._pool.connection()
            self.driver = await self._connection.__aenter__()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._session_scope is not None:
                await self._session_scope.__aexit__(kind, exc, traceback)
        finally:
            if self._connection is not None:
                self.driver = None
                await self._connection.__aexit__(kind, exc, traceback)

    async def session(self) -> AsyncSession:
        """A read session (autocommit, see `create_read_sessionmaker`), opened on first use."""
        if self._session is None:
            assert self._sessionmaker is not None
            self._session_scope = session_scope(self._sessionmaker)
            self._session = await self._session_scope.__aenter__()
        return self._session
