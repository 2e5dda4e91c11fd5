"""Every hand-written PostgreSQL statement of the project, the only code that uses the
asyncpg connection under a session, and the API's pool for its hot reads (`ReadPool`).

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

from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from mailer.db import engine as db_engine
from mailer.models import Batch
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
    (AUTOCOMMIT) stays without one, as it asked."""
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


class ReadPool:
    """asyncpg's own pool, for the API's hot reads (`mailer.db.reads`): one hand-written
    statement each, in autocommit, so a connection carries no session state to reset
    between requests (asyncpg's default reset is a round trip per release).

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

    def connection(self) -> ReadConnection:
        """`async with pool.connection() as driver`: a connection for hand-written reads."""
        return ReadConnection(self)

    async def _acquire(self) -> Any:
        assert self._pool is not None, "ReadPool.start() was not awaited"
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
        if exc is not None and (driver.is_closed() or not isinstance(exc, asyncpg.PostgresError)):
            # Not an error PostgreSQL reported on a live connection: the connection was
            # dropped (a restart drops them all), cut off in an unknown state, or its
            # statement cancelled. It is closed, and every other one replaced on its next
            # use, so that a restart costs one failed read, not one per pooled connection.
            driver.terminate()
            await self._pool.expire_connections()
        await self._pool.release(driver)


async def _nothing_to_reset(_driver: Any) -> None:
    """ReadPool's reset: its statements leave no session state behind."""


class ReadConnection:
    """One checkout of a ReadPool (a class, not a generator: it runs on every hot read)."""

    __slots__ = ("_driver", "_pool")

    def __init__(self, pool: ReadPool) -> None:
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


# -- batches: the one-statement POST ----------------------------------------------------

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]
BATCH_COLUMNS = tuple(c.name for c in Batch.__table__.columns)
BATCH_JSON_COLUMNS = frozenset(
    c.name for c in Batch.__table__.columns if isinstance(c.type.dialect_impl(_PG), JSONB)
)


def _insert_batch_sql() -> str:
    n = len(BATCH_COLUMNS)
    values = ", ".join(
        f"${i}::jsonb" if name in BATCH_JSON_COLUMNS else f"${i}"
        for i, name in enumerate(BATCH_COLUMNS, start=1)
    )
    batch_id, now = f"${n + 1}", f"${n + 2}"
    emails, variables, statuses, ev_emails, ev_types, ev_data = (f"${n + i}" for i in range(3, 9))
    bucket, kind, count = (f"${n + i}" for i in range(9, 12))
    # Identifiers come from the model; every value is a parameter. The metrics upsert (the
    # suppressed addresses' count) is part of the statement, so that the statement is the
    # whole write: atomic on its own, without BEGIN/COMMIT (see batches.service).
    return f"""
WITH b AS (
    INSERT INTO batches ({", ".join(BATCH_COLUMNS)}) VALUES ({values})
), m AS (
    INSERT INTO metrics (bucket, kind, count)
    SELECT {bucket}::timestamptz, {kind}::text, {count}::bigint WHERE {count}::bigint > 0
    ON CONFLICT (bucket, kind) DO UPDATE SET count = metrics.count + EXCLUDED.count
), r AS (
    INSERT INTO recipients ({", ".join(RECIPIENT_COLUMNS)})
    SELECT {batch_id}, u.ord - 1, u.email, u.vars::jsonb, u.status, 0, {now}
    FROM unnest({emails}::text[], {variables}::text[], {statuses}::text[])
         WITH ORDINALITY AS u(email, vars, status, ord)
)
INSERT INTO events (batch_id, recipient_id, email, type, data, created_at)
SELECT {batch_id}, NULL, e.email, e.type, e.data::jsonb, {now}
FROM unnest({ev_emails}::text[], {ev_types}::text[], {ev_data}::text[]) AS e(email, type, data)
"""  # noqa: S608


INSERT_BATCH_SQL = _insert_batch_sql()


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
) -> None:
    """A batch row (values in BATCH_COLUMNS order, JSON as text), its recipients, its
    events and a metrics count (bucket, kind, count; none if 0) in one statement. Raises
    UniqueViolation (the Idempotency-Key is taken)."""
    import asyncpg

    driver = await connection(session)
    try:
        await driver.execute(
            INSERT_BATCH_SQL,
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
        )
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(str(exc)) from exc


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
    `driver`: a connection of `ReadConnection`."""
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
    `driver`: a connection of `ReadConnection`."""
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
    message. `driver`: a connection of `ReadConnection`."""
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
