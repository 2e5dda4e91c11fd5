"""The one place that tells PostgreSQL from SQLite.

Feature modules never look at the dialect themselves. They call a function that works on
both (`insert_for`, `hour_start`, `member_of`, `notify`), or they write the portable version
of a statement and mark it with `postgresql_variant`, naming the hand-written PostgreSQL
version in `mailer.db.pg` that replaces it there.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    ColumnElement,
    String,
    any_,
    bindparam,
    func,
    literal_column,
    text,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from mailer.models.base import UTCDateTime

P = ParamSpec("P")
R = TypeVar("R")

Bind = AsyncSession | AsyncEngine | AsyncConnection | Engine | Connection

# SQLite allows 32766 bound variables per statement; PostgreSQL gets one array per query.
SQLITE_IN_CHUNK = 5000
PG_ANY_CHUNK = 20000


def dialect_name(bind: Bind) -> str:
    if isinstance(bind, AsyncSession):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def is_postgresql(bind: Bind) -> bool:
    return dialect_name(bind) == "postgresql"


def _unsupported(name: str) -> RuntimeError:  # pragma: no cover - two supported backends
    return RuntimeError(f"unsupported database dialect: {name}")


def postgresql_variant(
    variant: Callable[Concatenate[AsyncSession, P], Awaitable[R]],
    *,
    when: Callable[Concatenate[AsyncSession, P], bool] | None = None,
) -> Callable[
    [Callable[Concatenate[AsyncSession, P], Awaitable[R]]],
    Callable[Concatenate[AsyncSession, P], Awaitable[R]],
]:
    """Decorate a portable statement function (first argument the session): on PostgreSQL
    `variant` (same arguments) runs instead, if `when` (same arguments) allows it."""

    def decorate(
        portable: Callable[Concatenate[AsyncSession, P], Awaitable[R]],
    ) -> Callable[Concatenate[AsyncSession, P], Awaitable[R]]:
        @functools.wraps(portable)
        async def choose(session: AsyncSession, /, *args: P.args, **kwargs: P.kwargs) -> R:
            if is_postgresql(session) and (when is None or when(session, *args, **kwargs)):
                return await variant(session, *args, **kwargs)
            return await portable(session, *args, **kwargs)

        return choose

    return decorate


def insert_for(session: AsyncSession, model: Any) -> Any:
    """`INSERT` for `model` in the session's dialect: it has on_conflict_do_nothing /
    on_conflict_do_update (an upsert) and `.excluded`, the same on both databases."""
    name = dialect_name(session)
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise _unsupported(name)


def hour_start(session: AsyncSession, column: Any) -> ColumnElement[Any]:
    """The UTC hour a timestamp column's value falls in, as SQL. Literals, not bound
    parameters, so a select and its GROUP BY are identical text for PostgreSQL."""
    name = dialect_name(session)
    if name == "postgresql":
        # AT TIME ZONE 'UTC' first: date_trunc on timestamptz would use the session zone.
        utc = func.timezone(literal_column("'UTC'"), column)
        expr: ColumnElement[Any] = func.date_trunc(literal_column("'hour'"), utc)
    elif name == "sqlite":
        # UTCDateTime stores naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' on SQLite.
        expr = func.strftime(literal_column("'%Y-%m-%d %H:00:00.000000'"), column)
    else:  # pragma: no cover
        raise _unsupported(name)

    return type_coerce(expr, UTCDateTime())


def member_of(
    session: AsyncSession, column: Any, values: Sequence[str]
) -> Iterator[ColumnElement[bool]]:
    """Conditions "column is one of `values`", one per slice of the values the database
    takes in one statement: an array parameter (`= ANY`) on PostgreSQL, IN on SQLite."""
    if is_postgresql(session):
        for start in range(0, len(values), PG_ANY_CHUNK):
            chunk = list(values[start : start + PG_ANY_CHUNK])
            yield column == any_(bindparam("values", chunk, type_=postgresql.ARRAY(String())))
        return
    for start in range(0, len(values), SQLITE_IN_CHUNK):
        yield column.in_(values[start : start + SQLITE_IN_CHUNK])


def has_pair(session: AsyncSession, column: Any, name: str, value: str) -> ColumnElement[bool]:
    """A JSON object column holds `name` with the string `value`: containment on
    PostgreSQL (`@>`, which a GIN index serves), the key's text on SQLite."""
    if is_postgresql(session):
        return type_coerce(column, postgresql.JSONB()).contains({name: value})
    return column[name].as_string() == value  # type: ignore[no-any-return]


async def notify(session: AsyncSession, channel: str, payload: str) -> None:
    """PostgreSQL NOTIFY in the session's transaction (delivered at commit); a no-op on
    SQLite, which has no other process to tell."""
    if is_postgresql(session):
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )


async def single_statement_writes(session: AsyncSession) -> bool:
    """For a unit of work whose writes are one statement (atomic by itself) after any
    number of reads: on PostgreSQL, if the session has not started yet, its statements run
    in autocommit, each committing on its own, with no BEGIN and COMMIT (two round trips
    of a request's few). Otherwise (SQLite, or a session already in a transaction) nothing
    changes. Returns whether it did. The session's commit still runs its `after_commit`
    callbacks."""
    if not is_postgresql(session) or session.in_transaction():
        return False
    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return True


def supports_copy(session: AsyncSession) -> bool:
    """Whether rows can be streamed in with COPY (`mailer.db.pg.copy_records`): PostgreSQL."""
    return is_postgresql(session)


def can_listen(engine: AsyncEngine) -> bool:
    """Whether the database delivers NOTIFY to listening connections (PostgreSQL)."""
    return is_postgresql(engine)
