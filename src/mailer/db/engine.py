"""Engine and session factories.

SQLite (the embedded default) runs in WAL mode and every write transaction starts with
BEGIN IMMEDIATE, so concurrent writers queue on the busy timeout instead of failing when a
read lock would have to be upgraded. Read sessions run without a transaction on both
databases: a SQLite reader never takes the write lock. PostgreSQL uses asyncpg with a pool.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.db.after_commit import (
    Callback,
    commits_alone,
    make_due,
    run_callbacks,
    take_committed,
)
from mailer.db.dialect import is_postgresql

APPLICATION_NAME = "mailer"  # what pg_stat_activity shows for mailer's connections


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    size = pool_size or settings.db_pool_size
    engine = create_async_engine(
        url,
        pool_size=size,
        max_overflow=size,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": APPLICATION_NAME}},
    )
    _ping_idle_connections(engine)
    return engine


# A pooled connection unused this long is checked (a round trip) before it is handed out.
PING_AFTER_IDLE_SECONDS = 5.0


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Pre-ping, but only for connections that sat idle.

    SQLAlchemy's `pool_pre_ping` pings on every checkout, and on asyncpg a ping outside a
    transaction is BEGIN, `;`, ROLLBACK: three round trips before each request's first
    statement, most of a short request's cost. A connection in steady use needs none: if the
    server went away, the first statement fails, SQLAlchemy invalidates the whole pool and
    the next checkout connects afresh. What the ping is for, a pool left stale by a database
    restart during a quiet spell, is covered by pinging connections idle for a few seconds.
    Raising DisconnectionError makes the pool replace the connection and try again.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()  # runs inside SQLAlchemy's greenlet, like pre-ping
        except Exception as exc:
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc


def _sqlite_engine(url: str) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if not conn.get_execution_options().get(_SQLITE_AUTOCOMMIT):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# Execution option of SQLite read sessions: no BEGIN, so each statement is its own implicit
# transaction (the driver connection is in autocommit mode) and takes no write lock.
_SQLITE_AUTOCOMMIT = "mailer_sqlite_autocommit"


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read. They run without BEGIN/COMMIT (autocommit):
    each statement sees the latest committed data, as it would inside a READ COMMITTED
    transaction. On PostgreSQL that is one round trip instead of three; on SQLite a reader
    does not take the write lock (BEGIN IMMEDIATE), so reads never wait behind a writer and
    never hold one up. A write made in a read session (a console page refreshing its sign-in)
    commits on its own."""
    if not is_postgresql(engine):
        return create_sessionmaker(engine.execution_options(**{_SQLITE_AUTOCOMMIT: True}))
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


_AT_END = "mailer.db.at_end"


def at_end(session: AsyncSession, hook: Callable[[BaseException | None], Awaitable[None]]) -> None:
    """Have `session_scope` await `hook(error)` when the session's unit of work ends, after
    its commit or rollback (`error` None on success), before the after-commit callbacks."""
    session.info.setdefault(_AT_END, []).append(hook)


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    defer: Callable[[Callback], object] | None = None,
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any exception. Callbacks registered
    with `after_commit` run once the commit has succeeded: awaited here, in order, or each
    handed to `defer` to run later (a request's background tasks)."""
    session = sessionmaker()
    try:
        error: BaseException | None = None
        try:
            yield session
            if _holds_nothing(session):
                _end_without_io(session, committed=True)
            else:
                await session.commit()
        except BaseException as exc:
            error = exc
            if _holds_nothing(session):
                _end_without_io(session, committed=False)
            else:
                await session.rollback()
            raise
        finally:
            for hook in session.info.pop(_AT_END, ()):
                await hook(error)
    finally:
        if _holds_nothing(session):
            session.sync_session.close()
        else:
            await session.__aexit__(None, None, None)  # closes in a task, as `async with` does
    committed = take_committed(session)
    if defer is not None:
        for callback in committed:
            defer(callback)
        return
    await run_callbacks(committed)  # the connection is back in the pool meanwhile


# A session that never took a connection and has nothing to flush (a small POST whose
# statements ran on a lent connection, `mailer.db.pg.lend`) commits, rolls back and closes
# without I/O: the synchronous calls do it directly. AsyncSession would run each in a new
# greenlet and close in a task of its own, ~0.1 ms of a small POST's CPU (bench/api, issue 18).
_CONNECTED = "mailer.db.connected"


@event.listens_for(Session, "after_begin")
def _on_connection(session: Session, _transaction: Any, _connection: Any) -> None:
    session.info[_CONNECTED] = True


def _end_without_io(session: AsyncSession, *, committed: bool) -> None:
    """Commit (`committed`) or roll back a session that holds nothing. One whose statements
    commit alone, outside a transaction, has nothing to end but its after-commit callbacks:
    Session.commit would begin a transaction only to commit it."""
    sync = session.sync_session
    if not committed:
        sync.rollback()
    elif sync.in_transaction() or not commits_alone(session):
        sync.commit()
    else:
        make_due(session)


def _holds_nothing(session: AsyncSession) -> bool:
    if session.info.get(_CONNECTED):
        return False
    sync = session.sync_session
    return not (sync.new or sync.dirty or sync.deleted)
