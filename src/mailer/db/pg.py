"""Every hand-written PostgreSQL statement of the project, the only code that uses the
asyncpg connection under a session, and the API's pool for its hot statements
(`DriverPool`: the hot reads, and the one statement of a small POST, see `lend`).

The statements on the per-email and ingest paths (claim, record outcomes, the one-statement
POST, COPY) run here, on the session's own asyncpg connection and transaction: through
SQLAlchemy they cost tens of microseconds of CPU per recipient (statement building, an
expanding IN, a parameter set per row, JSON through the stdlib); this way a few (one array
parameter per column, orjson). Feature repositories write the portable version and choose
this one with `mailer.db.dialect.postgresql_variant`.

Every statement is a module-level constant listed in STATEMENTS, and every COPY target in
COPY_COLUMNS, so a test can PREPARE them against a migrated database and check the names
they use against the models.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import orjson
from sqlalchemy import FromClause
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm.attributes import instance_dict

from mailer.db import engine as db_engine
from mailer.db.after_commit import statements_commit_alone
from mailer.db.dialect import is_postgresql
from mailer.errors import MailerError
from mailer.models import Batch, Template, TemplateVersion
from mailer.models.enums import RecipientStatus

COPY_MIN_ROWS = 20  # below this an INSERT is as cheap as a COPY round trip (two round trips)

RECIPIENT_COLUMNS = ("batch_id", "seq", "email", "variables", "status", "attempts", "updated_at")
EVENT_COLUMNS = ("batch_id", "recipient_id", "email", "type", "data", "created_at")
WEBHOOK_DELIVERY_COLUMNS = (
    "event_id",
    "endpoint_id",
    "type",
    "batch_id",
    "recipient_id",
    "email",
    "data",
    "created_at",
    "state",
    "attempts",
    "next_attempt_at",
)
COPY_COLUMNS: dict[str, tuple[str, ...]] = {
    "recipients": RECIPIENT_COLUMNS,
    "events": EVENT_COLUMNS,
    "webhook_deliveries": WEBHOOK_DELIVERY_COLUMNS,
}


async def connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session, inside the session's transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, before its own first statement, so a
    statement sent here before any other would run, and commit, on its own: a unit of work
    whose first write is hand-written (an outcome statement followed by webhook outbox rows)
    would not be atomic, and retrying it after a later failure would apply it twice. The
    transaction is begun here instead. A session switched to `single_statement_writes`
    (AUTOCOMMIT) stays without one, as it asked; a session `lend` was called on gets the
    lent connection."""
    lent: _Lent | None = session.info.get(_LENT)
    if lent is not None:
        return await lent.driver()
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    adapter = raw.dbapi_connection
    start = getattr(adapter, "_start_transaction", None)
    if start is None:  # pragma: no cover - another SQLAlchemy: its public path begins too
        await conn.exec_driver_sql("SELECT 1")
    elif getattr(adapter, "_transaction", None) is None:
        await start()  # does nothing under AUTOCOMMIT
    driver = raw.driver_connection
    assert driver is not None
    return driver


class DriverPool:
    """asyncpg's own pool, for the API's hot statements: the hot reads (`mailer.db.reads`)
    and the statements of a small POST (`lend`). Each runs in autocommit, so a connection
    carries no session state to reset between requests (asyncpg's default reset is a round
    trip per release).

    Not SQLAlchemy's pool: its async checkout and return each run in a new greenlet, and
    every new greenlet maps, touches and unmaps a fresh frame stack (mmap, a page fault,
    munmap): ~0.05 ms of system CPU per request, a quarter of a bare GET's whole cost
    (bench/api, issue 18). This pool holds up to `size` connections of its own, beside the
    engine's.

    A database restart drops every connection: the first read that finds its connection
    closed makes the pool replace all of them (asyncpg's `expire_connections`), and after a
    quiet spell the first read checks its connection before use, as the engine does."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self._engine = engine
        self._size = size
        self._pool: Any = None
        self._last_used = 0.0
        # The engine whose connections run each statement in autocommit, for the ORM
        # statements of a session this pool lends to (`single_statement_unit`).
        self.autocommit_engine = engine.sync_engine.execution_options(isolation_level="AUTOCOMMIT")

    async def start(self) -> None:
        import asyncpg

        args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
        self._pool = await asyncpg.create_pool(
            *args,
            **kwargs,
            min_size=0,  # connects on first use: the API starts while the database is down
            max_size=self._size,
            reset=_nothing_to_reset,
            server_settings={"application_name": db_engine.APPLICATION_NAME},
        )
        self._last_used = time.monotonic()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    def connection(self) -> DriverConnection:
        """`async with pool.connection() as driver`: a connection for hand-written
        statements, each committing on its own."""
        return DriverConnection(self)

    async def _acquire(self) -> Any:
        assert self._pool is not None, "DriverPool.start() was not awaited"
        idle = time.monotonic() - self._last_used >= db_engine.PING_AFTER_IDLE_SECONDS
        driver = await self._pool.acquire()
        if not idle:
            return driver
        try:
            await driver.fetchval("SELECT 1")  # (asyncpg fails on ";" after a termination)
        except Exception:
            driver.terminate()
            await self._pool.release(driver)
            await self._pool.expire_connections()
            driver = await self._pool.acquire()
        return driver

    async def _release(self, driver: Any, exc: BaseException | None) -> None:
        import asyncpg

        self._last_used = time.monotonic()
        if driver.is_closed() or (
            exc is not None and not isinstance(exc, (asyncpg.PostgresError, MailerError))
        ):
            # Neither an error PostgreSQL reported on a live connection nor a refusal the
            # application raised between statements (a 404, a 422): the connection was
            # dropped (a restart drops them all), cut off in an unknown state, or its
            # statement cancelled. It is closed, and every other one replaced on its next
            # use, so that a restart costs one failed read, not one per pooled connection.
            driver.terminate()
            await self._pool.expire_connections()
        await self._pool.release(driver)


async def _nothing_to_reset(_driver: Any) -> None:
    """DriverPool's reset: its statements leave no session state behind."""


class DriverConnection:
    """One checkout of a DriverPool (a class, not a generator: it runs on every hot read)."""

    __slots__ = ("_driver", "_pool")

    def __init__(self, pool: DriverPool) -> None:
        self._pool = pool
        self._driver: Any = None

    async def __aenter__(self) -> Any:
        self._driver = await self._pool._acquire()
        return self._driver

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        driver, self._driver = self._driver, None
        await self._pool._release(driver, exc)


# -- a session's hand-written statements on a pooled connection -------------------------

_LENT = "mailer.pg.lent"


class _Lent:
    """A DriverPool connection lent to a session: taken at its first hand-written
    statement, given back when the session's unit of work ends (`session_scope`)."""

    __slots__ = ("_checkout", "_driver", "_pool")

    def __init__(self, pool: DriverPool) -> None:
        self._pool = pool
        self._checkout: DriverConnection | None = None
        self._driver: Any = None

    async def driver(self) -> Any:
        if self._driver is None:
            self._checkout = self._pool.connection()
            self._driver = await self._checkout.__aenter__()
        return self._driver

    async def give_back(self, exc: BaseException | None) -> None:
        checkout, self._checkout, self._driver = self._checkout, None, None
        if checkout is not None:
            await checkout.__aexit__(type(exc) if exc else None, exc, None)


def lend(session: AsyncSession, pool: DriverPool) -> None:
    """Run the session's hand-written statements on a connection of `pool`, in autocommit,
    until its unit of work ends (`session_scope`). Only for a session whose every statement
    commits on its own (`single_statement_unit`): then which connection runs each one
    changes nothing."""
    lent = _Lent(pool)
    session.info[_LENT] = lent
    db_engine.at_end(session, lent.give_back)


async def single_statement_unit(session: AsyncSession, pool: DriverPool) -> bool:
    """`mailer.db.dialect.single_statement_writes` for the API's small POSTs: if the session
    has not started, each of its statements commits on its own, its hand-written ones on a
    connection of `pool` (`lend`), the others (ORM reads, an expired Idempotency-Key) on
    one of the engine's, taken only if needed. Returns whether it did (not on SQLite, nor
    in a started session).

    Taking a connection from SQLAlchemy's pool and giving it back cost ~0.2 ms of a small
    POST's CPU, against ~0.02 ms from this pool (bench/api, issue 18; see DriverPool)."""
    if not is_postgresql(session) or session.in_transaction():
        return False
    session.sync_session.bind = pool.autocommit_engine
    lend(session, pool)
    statements_commit_alone(session)
    return True


async def driver_of(conn: AsyncConnection) -> Any:
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return driver


async def copy_records(
    session: AsyncSession,
    table: str,
    columns: Sequence[str],
    records: Iterable[Sequence[Any]] | AsyncIterable[Sequence[Any]],
) -> None:
    """COPY rows (tuples in `columns` order; JSON columns as JSON text) into `table`."""
    driver = await connection(session)
    await driver.copy_records_to_table(table, records=records, columns=list(columns))


# -- batches and emails: the one-statement POST -----------------------------------------

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _json_columns(table: FromClause) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type.dialect_impl(_PG), JSONB))


BATCH_COLUMNS = tuple(c.name for c in Batch.__table__.columns)
BATCH_JSON_COLUMNS = _json_columns(Batch.__table__)


class _Row:
    """How to read a model's row off a transient object: the values set on it (the
    instance's dict, without going through each instrumented attribute: ~1 µs a column
    that way), then the defaults of those left unset and the JSON columns as text."""

    __slots__ = ("defaults", "json", "keys")

    def __init__(self, cls: Any) -> None:
        keys = {c.name: a.key for a in cls.__mapper__.column_attrs for c in a.columns}
        columns = list(cls.__table__.columns)
        self.keys = [keys[c.name] for c in columns]
        self.defaults: list[tuple[int, Any, bool]] = []  # (position, default, is callable)
        for i, column in enumerate(columns):
            default = column.default
            if default is not None and getattr(default, "is_scalar", False):
                self.defaults.append((i, default.arg, False))
            elif default is not None and getattr(default, "is_callable", False):
                self.defaults.append((i, default.arg, True))
        json_columns = _json_columns(cls.__table__)
        self.json = [i for i, c in enumerate(columns) if c.name in json_columns]


_ROWS: dict[type[Any], _Row] = {}


def model_values(obj: Any) -> list[Any]:
    """Every column of a transient ORM object, in table order, with the model's scalar or
    callable defaults for unset ones and JSON columns as JSON text: the parameters of a
    hand-written INSERT of the row (VALUES in the table's column order)."""
    row = _ROWS.get(type(obj))
    if row is None:
        row = _ROWS[type(obj)] = _Row(type(obj))
    state = instance_dict(obj)
    values = [state.get(key) for key in row.keys]
    for i, default, is_callable in row.defaults:
        if values[i] is None:
            values[i] = default(None) if is_callable else default
    for i in row.json:
        if values[i] is not None:
            values[i] = orjson.dumps(values[i]).decode()
    return values


class _Numbered:
    """Numbers a statement's parameters ($1, $2, ...) in the order they are first named."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str) -> str:
        if name not in self.names:
            self.names.append(name)
        return f"${self.names.index(name) + 1}"

    def row(self, prefix: str, table: FromClause) -> str:
        """A VALUES row of `table`'s columns, one parameter each (JSON given as text)."""
        json_columns = _json_columns(table)
        return ", ".join(
            self(f"{prefix}.{c.name}") + ("::jsonb" if c.name in json_columns else "")
            for c in table.columns
        )


def _columns(table: FromClause) -> str:
    return ", ".join(c.name for c in table.columns)


def _insert_batch_sql(*, emails: bool = False, inline: bool = False) -> str:
    """The statement of a new batch (POST /batches) or of new emails (POST /emails:
    `emails`), whose parameters, in order: the batch row (its columns in table order), the
    batch id, its creation time, the recipients (emails, variables as JSON text, statuses),
    the events (emails, types, data as JSON text), the metrics count (bucket, kind, count);
    for emails, then the recipients' ids (read beforehand, see EMAIL_CONTEXT_SQL, so the
    answer that names them is stored with the batch) and, `inline`, the inline template's
    row and its version's row (columns in table order).

    Identifiers come from the models; every value is a parameter. The metrics upsert (the
    suppressed addresses' count) is part of the statement, so that the statement is the
    whole write: atomic on its own, without BEGIN/COMMIT (see batches.service)."""
    p = _Numbered()
    batch_row = p.row("batch", Batch.__table__)
    batch_id, now = p("batch_id"), p("now")
    emails_, variables, statuses = p("emails"), p("variables"), p("statuses")
    ev_emails, ev_types, ev_data = p("event_emails"), p("event_types"), p("event_data")
    bucket, kind, count = p("bucket"), p("kind"), p("count")
    template = ""
    if emails:
        ids = p("ids")
        recipients = f"""
    INSERT INTO recipients (id, {", ".join(RECIPIENT_COLUMNS)})
    SELECT u.id, {batch_id}, u.ord - 1, u.email, u.vars::jsonb, u.status, 0, {now}
    FROM unnest({ids}::bigint[], {emails_}::text[], {variables}::text[], {statuses}::text[])
         WITH ORDINALITY AS u(id, email, vars, status, ord)"""  # noqa: S608
        if inline:
            # The version refers to its template and the batch to both, inserted by the same
            # statement: foreign keys are checked at its end.
            template = f"""
    INSERT INTO templates ({_columns(Template.__table__)})
    VALUES ({p.row("template", Template.__table__)})
), v AS (
    INSERT INTO template_versions ({_columns(TemplateVersion.__table__)})
    VALUES ({p.row("version", TemplateVersion.__table__)})
), b AS ("""  # noqa: S608
    else:
        recipients = f"""
    INSERT INTO recipients ({", ".join(RECIPIENT_COLUMNS)})
    SELECT {batch_id}, u.ord - 1, u.email, u.vars::jsonb, u.status, 0, {now}
    FROM unnest({emails_}::text[], {variables}::text[], {statuses}::text[])
         WITH ORDINALITY AS u(email, vars, status, ord)"""  # noqa: S608
    head = f"WITH t AS ({template}" if template else "WITH b AS ("
    return f"""
{head}
    INSERT INTO batches ({", ".join(BATCH_COLUMNS)}) VALUES ({batch_row})
), m AS (
    INSERT INTO metrics (bucket, kind, count)
    SELECT {bucket}::timestamptz, {kind}::text, {count}::bigint WHERE {count}::bigint > 0
    ON CONFLICT (bucket, kind) DO UPDATE SET count = metrics.count + EXCLUDED.count
), r AS ({recipients}
)
INSERT INTO events (batch_id, recipient_id, email, type, data, created_at)
SELECT {batch_id}, NULL, e.email, e.type, e.data::jsonb, {now}
FROM unnest({ev_emails}::text[], {ev_types}::text[], {ev_data}::text[]) AS e(email, type, data)
"""  # noqa: S608


INSERT_BATCH_SQL = _insert_batch_sql()
INSERT_EMAILS_SQL = _insert_batch_sql(emails=True)
INSERT_INLINE_EMAILS_SQL = _insert_batch_sql(emails=True, inline=True)


class UniqueViolation(Exception):
    """A statement here broke a unique constraint."""


async def insert_batch(
    session: AsyncSession,
    batch_values: Sequence[Any],
    batch_id: str,
    now: datetime,
    emails: list[str],
    variables: list[str],
    statuses: list[str],
    event_emails: list[str | None],
    event_types: list[str],
    event_data: list[str],
    metric: tuple[datetime, str, int],
    *,
    emails_of: tuple[list[int], Sequence[Any] | None, Sequence[Any] | None] | None = None,
) -> None:
    """A batch row (values in BATCH_COLUMNS order, JSON as text), its recipients, its
    events and a metrics count (bucket, kind, count; none if 0) in one statement. Emails
    (`emails_of`) give their recipients' ids and, for inline content, the template's and the
    version's rows (`model_values`), or None twice. Raises UniqueViolation (the
    Idempotency-Key is taken)."""
    import asyncpg

    sql = INSERT_BATCH_SQL
    extra: tuple[Any, ...] = ()
    if emails_of is not None:
        ids, template_row, version_row = emails_of
        if template_row is None or version_row is None:
            sql, extra = INSERT_EMAILS_SQL, (ids,)
        else:
            sql, extra = INSERT_INLINE_EMAILS_SQL, (ids, *template_row, *version_row)
    driver = await connection(session)
    try:
        await driver.execute(
            sql,
            *batch_values,
            batch_id,
            now,
            emails,
            variables,
            statuses,
            event_emails,
            event_types,
            event_data,
            *metric,
            *extra,
        )
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(str(exc)) from exc


# -- batches: the batch an Idempotency-Key names -----------------------------------------

KEYED_BATCH_SQL = """
SELECT id, created_at, request_hash, response::text AS response
FROM batches WHERE api_key_id = $1 AND idempotency_key = $2
"""


async def keyed_batch(session: AsyncSession, api_key_id: str, key: str) -> Any:
    """The row of KEYED_BATCH_SQL (`response` as JSON text) or None."""
    driver = await connection(session)
    return await driver.fetchrow(KEYED_BATCH_SQL, api_key_id, key)


# -- batches: what a new batch is checked against, in one round trip --------------------

BATCH_CONTEXT_SQL = """
SELECT t.id AS template_id, v.id, v.version, v.name, v.subject, v.html, v.text,
       v.text_derived, v.variables::text AS variables, v.created_at,
       ARRAY(SELECT s.email FROM suppressions AS s WHERE s.email = ANY($2::text[])) AS suppressed
FROM templates AS t JOIN template_versions AS v ON v.id = t.current_version_id
WHERE t.id = $1 AND t.deleted_at IS NULL
"""


async def batch_context(session: AsyncSession, template_id: str, emails: list[str]) -> Any:
    """A live template's current version (columns of BATCH_CONTEXT_SQL, variables as JSON
    text) and which of `emails` are suppressed (`suppressed`); None if no such template."""
    driver = await connection(session)
    return await driver.fetchrow(BATCH_CONTEXT_SQL, template_id, emails)


# -- emails: what new emails are checked against, in one round trip ---------------------

# The template's current version (NULLs when $1 is NULL or names no live template), which
# of the addresses are suppressed (but for the reasons in $3), and ids for the recipients
# to come, so that the answer naming them is stored with the batch's own insert.
EMAIL_CONTEXT_SQL = """
SELECT t.id AS template_id, v.id, v.subject, v.html, v.text, v.text_derived,
       v.variables::text AS variables,
       ARRAY(SELECT s.email FROM suppressions AS s
             WHERE s.email = ANY($2::text[]) AND s.reason <> ALL($3::text[])) AS suppressed,
       ARRAY(SELECT nextval(pg_get_serial_sequence('recipients', 'id'))
             FROM generate_series(1, $4::int)) AS ids
FROM (SELECT 1) AS one
LEFT JOIN templates AS t ON t.id = $1::text AND t.deleted_at IS NULL
LEFT JOIN template_versions AS v ON v.id = t.current_version_id
"""


async def email_context(
    session: AsyncSession,
    template_id: str | None,
    emails: list[str],
    ignored_reasons: list[str],
) -> Any:
    """The row of EMAIL_CONTEXT_SQL: the version's columns (variables as JSON text; NULL
    without a live template `template_id`), `suppressed` and `ids` (one per email)."""
    driver = await connection(session)
    return await driver.fetchrow(
        EMAIL_CONTEXT_SQL, template_id, emails, ignored_reasons, len(emails)
    )


# -- batches: reading one, with its in-flight counts -----------------------------------

# JSON columns as text, decoded with orjson by the caller: the connection's JSON codec is
# the standard library's, and decoding a batch's `response` with it cost ~2 % of a GET.
_BATCH_VIEW_COLUMNS = ", ".join(
    f"b.{name}::text AS {name}" if name in BATCH_JSON_COLUMNS else f"b.{name}"
    for name in BATCH_COLUMNS
)
BATCH_VIEW_SQL = f"""
SELECT {_BATCH_VIEW_COLUMNS}, f.sending, f.retrying
FROM batches AS b
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE r.status = 'SENDING') AS sending,
           count(*) FILTER (WHERE r.status = 'RETRYING') AS retrying
    FROM recipients AS r
    WHERE r.batch_id = b.id AND r.status IN ('SENDING', 'RETRYING')
      AND b.status <> 'SCHEDULED'
      AND b.total_recipients > b.sent_count + b.failed_count + b.suppressed_count
                               + b.cancelled_count
) AS f ON true
WHERE b.id = $1
"""  # noqa: S608


async def batch_view(driver: Any, batch_id: str) -> Any:
    """A batch's row (its columns; JSON as text) with `sending` and `retrying`: its
    recipients in those states, counted only while it has unfinished ones (the condition
    on the batch row gates the count, so a finished batch costs no scan). None if none.
    `driver`: a connection of `DriverConnection`."""
    return await driver.fetchrow(BATCH_VIEW_SQL, batch_id)


# -- batches: a page of a batch's events, with its total and whether the batch exists ---

EVENTS_PAGE_SQL = """
SELECT c.found, c.total, e.id, e.type, e.email, e.recipient_id, e.batch_id, e.created_at,
       e.data::text AS data
FROM (
    SELECT EXISTS (SELECT 1 FROM batches WHERE id = $1) AS found,
           (SELECT count(*) FROM events
            WHERE batch_id = $1 AND ($2::text IS NULL OR type = $2::text)
              AND ($5::text IS NULL OR email = $5::text)) AS total
) AS c
LEFT JOIN LATERAL (
    SELECT * FROM events
    WHERE batch_id = $1 AND ($2::text IS NULL OR type = $2::text)
      AND ($5::text IS NULL OR email = $5::text)
    ORDER BY id LIMIT $3 OFFSET $4
) AS e ON true
"""


async def events_page(
    driver: Any,
    batch_id: str,
    type_: str | None,
    email: str | None,
    limit: int,
    offset: int,
) -> list[Any]:
    """Rows of EVENTS_PAGE_SQL: each carries `found` (the batch exists) and `total` (its
    events of `type_` and `email`, or all); one row with a NULL id when the page is empty.
    `driver`: a connection of `DriverConnection`."""
    rows: list[Any] = await driver.fetch(EVENTS_PAGE_SQL, batch_id, type_, limit, offset, email)
    return rows


# -- emails: one message with its events --------------------------------------------------

MESSAGE_VIEW_SQL = """
SELECT r.id, r.status, r.email, r.provider_message_id, r.attempts, r.last_error, r.sent_at,
       r.updated_at, b.id AS batch_id, b.from_address, b.tags::text AS tags, b.created_at,
       b.template_id, t.inline, v.subject, v.version,
       e.id AS event_id, e.type AS event_type, e.email AS event_email,
       e.recipient_id AS event_recipient_id, e.batch_id AS event_batch_id,
       e.created_at AS event_created_at, e.data::text AS event_data
FROM recipients AS r
JOIN batches AS b ON b.id = r.batch_id
JOIN template_versions AS v ON v.id = b.template_version_id
JOIN templates AS t ON t.id = b.template_id
LEFT JOIN LATERAL (
    SELECT * FROM events WHERE recipient_id = r.id ORDER BY id
) AS e ON true
WHERE r.id = $1
ORDER BY e.id
"""


async def message_view(driver: Any, message_id: int) -> list[Any]:
    """Rows of MESSAGE_VIEW_SQL: the message (a recipient with its batch and template) once
    per event, oldest event first, or once with a NULL event_id; [] if there is no such
    message. `driver`: a connection of `DriverConnection`."""
    rows: list[Any] = await driver.fetch(MESSAGE_VIEW_SQL, message_id)
    return rows


# -- emails: the newest messages of a few batches ----------------------------------------


# Per batch, its newest rows below the cursor through (batch_id, seq): a batch's recipients
# are written once, in seq order, so within a batch seq order is id order. A batch whose
# first row is not below the cursor is skipped before its rows are read, and in the
# cursor's own batch the scan starts at the cursor's seq. One statement per status, the
# status a literal: a partial index (ix_recipients_failed_batch_id_seq) serves only a plan
# that knows the value, and asyncpg's prepared statements turn generic after five runs.
def _newest_in_batches_sql(status: RecipientStatus | None) -> str:
    condition = "" if status is None else f"AND r.status = '{status.value}'"
    return f"""
SELECT m.id
FROM unnest($1::text[]) AS c(batch_id)
CROSS JOIN LATERAL (
    SELECT r.id FROM recipients AS r
    WHERE r.batch_id = c.batch_id
      AND r.seq < CASE WHEN c.batch_id = $3::text THEN $4::int ELSE 2147483647 END
      AND r.id < $2::bigint
      {condition}
    ORDER BY r.seq DESC
    LIMIT $5
) AS m
WHERE (SELECT f.id FROM recipients AS f WHERE f.batch_id = c.batch_id ORDER BY f.seq LIMIT 1)
      < $2::bigint
ORDER BY m.id DESC
LIMIT $5
"""  # noqa: S608


NEWEST_IN_BATCHES_SQL: dict[RecipientStatus | None, str] = {
    status: _newest_in_batches_sql(status) for status in (None, *RecipientStatus)
}


async def newest_in_batches(
    session: AsyncSession,
    batch_ids: list[str],
    before_id: int,
    cursor_batch: str,
    cursor_seq: int,
    status: str | None,
    limit: int,
) -> list[int]:
    """Ids of the newest `limit` recipients of these batches below `before_id` (whose row
    is seq `cursor_seq` of `cursor_batch`), in `status` if given; newest first."""
    driver = await connection(session)
    sql = NEWEST_IN_BATCHES_SQL[None if status is None else RecipientStatus(status)]
    rows = await driver.fetch(sql, batch_ids, before_id, cursor_batch, cursor_seq, limit)
    return [int(r["id"]) for r in rows]


# -- delivery: claim, outcomes ----------------------------------------------------------

CLAIM_SQL = """
UPDATE recipients AS r
SET status = 'SENDING', claimed_at = $5, claimed_by = $9, updated_at = $5
FROM (
    SELECT id FROM recipients
    WHERE batch_id = $1 AND seq >= $2 AND seq < $3
      AND (status = ANY($4::text[])
           OR (status = 'SENDING' AND claimed_by IS NULL AND claimed_at < $6)
           OR (status = 'SENDING' AND $10::timestamptz IS NOT NULL AND claimed_by <> $9
               AND NOT EXISTS (SELECT 1 FROM system_state AS w
                               WHERE w.key = recipients.claimed_by AND w.updated_at >= $10)))
      AND NOT (id = ANY($7::bigint[]))
    ORDER BY seq
    LIMIT $8
    FOR UPDATE SKIP LOCKED
) AS c
WHERE r.id = c.id
RETURNING r.id, r.seq, r.email, r.variables::text, r.attempts,
          EXISTS (SELECT 1 FROM suppressions AS s
                  WHERE s.email = r.email AND s.reason <> ALL($11::text[]))
"""


async def claim(
    session: AsyncSession,
    batch_id: str,
    seq_start: int,
    seq_end: int,
    statuses: list[str],
    now: datetime,
    expired_before: datetime,
    exclude: list[int],
    limit: int,
    worker: str,
    dead_before: datetime | None,
    ignored_reasons: list[str],
) -> list[Any]:
    """Rows (id, seq, email, variables as JSON text, attempts, suppressed) just claimed by
    `worker`. Claimable: `statuses`, claims naming no worker older than `expired_before`,
    and claims of workers with no heartbeat since `dead_before` (None: not judged).
    Suppressions for `ignored_reasons` do not count as suppressed."""
    driver = await connection(session)
    rows: list[Any] = await driver.fetch(
        CLAIM_SQL,
        batch_id,
        seq_start,
        seq_end,
        statuses,
        now,
        expired_before,
        exclude,
        limit,
        worker,
        dead_before,
        ignored_reasons,
    )
    return rows


RECORD_OUTCOMES_SQL = """
WITH u AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bool[], $5::text[],
                         $6::bool[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::text[])
        AS u(id, status, attempts, sent, provider_message_id, set_error, last_error,
             batch_id, email, event_type, data)
), recipient_rows AS (
    UPDATE recipients AS r
    SET status = u.status,
        attempts = u.attempts,
        updated_at = $12,
        provider_message_id = CASE WHEN u.sent THEN u.provider_message_id
                                   ELSE r.provider_message_id END,
        sent_at = CASE WHEN u.sent THEN $12 ELSE r.sent_at END,
        last_error = CASE WHEN u.set_error THEN u.last_error ELSE r.last_error END
    FROM u
    WHERE r.id = u.id
), event_rows AS (
    INSERT INTO events (batch_id, recipient_id, email, type, data, created_at)
    SELECT u.batch_id, u.id, u.email, u.event_type, u.data::jsonb, $12 FROM u
), batch_rows AS (
    UPDATE batches AS b
    SET sent_count = b.sent_count + c.sent,
        failed_count = b.failed_count + c.failed,
        suppressed_count = b.suppressed_count + c.suppressed,
        cancelled_count = b.cancelled_count + c.cancelled
    FROM unnest($13::text[], $14::int[], $15::int[], $16::int[], $20::int[])
         AS c(id, sent, failed, suppressed, cancelled)
    WHERE b.id = c.id
)
INSERT INTO metrics (bucket, kind, count)
SELECT $17, m.kind, m.count FROM unnest($18::text[], $19::bigint[]) AS m(kind, count)
ON CONFLICT (bucket, kind) DO UPDATE SET count = metrics.count + EXCLUDED.count
"""


async def record_outcomes(session: AsyncSession, *arguments: Any) -> None:
    """RECORD_OUTCOMES_SQL with its 20 parameters: recipients' new states (columns), their
    events, the batches' counters and the minute's metrics. One statement, one round trip."""
    driver = await connection(session)
    await driver.execute(RECORD_OUTCOMES_SQL, *arguments)


# -- metrics ----------------------------------------------------------------------------

BUMP_METRICS_SQL = """
INSERT INTO metrics (bucket, kind, count)
SELECT $1, u.kind, u.count FROM unnest($2::text[], $3::bigint[]) AS u(kind, count)
ON CONFLICT (bucket, kind) DO UPDATE SET count = metrics.count + EXCLUDED.count
"""


async def bump_metrics(
    session: AsyncSession, bucket: datetime, kinds: list[str], counts: list[int]
) -> None:
    """Add counts to a minute bucket (an upsert). Hand-written: SQLAlchemy compiles a
    multi-row VALUES upsert anew on every call (~1 ms), and the worker bumps the counters
    on every flush of outcomes."""
    driver = await connection(session)
    await driver.execute(BUMP_METRICS_SQL, bucket, kinds, counts)


STATEMENTS: dict[str, str] = {
    "insert_batch": INSERT_BATCH_SQL,
    "insert_emails": INSERT_EMAILS_SQL,
    "insert_inline_emails": INSERT_INLINE_EMAILS_SQL,
    "email_context": EMAIL_CONTEXT_SQL,
    "keyed_batch": KEYED_BATCH_SQL,
    "batch_context": BATCH_CONTEXT_SQL,
    "batch_view": BATCH_VIEW_SQL,
    "events_page": EVENTS_PAGE_SQL,
    "message_view": MESSAGE_VIEW_SQL,
    "newest_in_batches": NEWEST_IN_BATCHES_SQL[None],
    "newest_in_batches_failed": NEWEST_IN_BATCHES_SQL[RecipientStatus.FAILED],
    "claim": CLAIM_SQL,
    "record_outcomes": RECORD_OUTCOMES_SQL,
    "bump_metrics": BUMP_METRICS_SQL,
}


# -- LISTEN -----------------------------------------------------------------------------


async def listen(
    conn: AsyncConnection,
    channel: str,
    on_notify: Any,
    on_terminated: Any,
) -> None:
    """LISTEN on `channel` on a connection of its own: `on_notify` is called for each
    notification, `on_terminated` when the connection is lost."""
    driver = await driver_of(conn)
    driver.add_termination_listener(on_terminated)
    await driver.add_listener(channel, on_notify)
