"""Queries on batches, recipients and events for the batches API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.batches.ingest import RecipientChecker, gc_paused
from mailer.events import COPY_MIN_ROWS
from mailer.models import Batch, Event, Recipient, Suppression
from mailer.models.base import utcnow
from mailer.models.enums import CLAIMABLE_STATUSES, RecipientStatus

RECIPIENT_COLUMNS = ("batch_id", "seq", "email", "variables", "status", "attempts", "updated_at")
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


async def insert_recipients(
    session: AsyncSession,
    batch_id: str,
    rows: Sequence[tuple[str, dict[str, Any]]],
    suppressed: AbstractSet[str] = frozenset(),
) -> None:
    """Bulk insert (email, variables) rows with seq = position, status SUPPRESSED for the
    emails in `suppressed` and PENDING for the others. COPY on PostgreSQL, but for a few
    rows (a COPY is two round trips, an INSERT one)."""
    now = utcnow()
    pending, held = str(RecipientStatus.PENDING), str(RecipientStatus.SUPPRESSED)
    conn = await session.connection()
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        raw = await conn.get_raw_connection()
        dumps = orjson.dumps
        with gc_paused():
            records = [
                (
                    batch_id,
                    seq,
                    email,
                    dumps(variables).decode(),
                    held if email in suppressed else pending,
                    0,
                    now,
                )
                for seq, (email, variables) in enumerate(rows)
            ]
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            "recipients", records=records, columns=RECIPIENT_COLUMNS
        )
        return
    await session.execute(
        insert(Recipient),
        [
            {
                "batch_id": batch_id,
                "seq": seq,
                "email": email,
                "variables": variables,
                "status": held if email in suppressed else pending,
                "attempts": 0,
                "updated_at": now,
            }
            for seq, (email, variables) in enumerate(rows)
        ],
    )


class DuplicateBatch(Exception):
    """The batch's Idempotency-Key is taken (a concurrent request won the race)."""


def _batch_values(batch: Batch) -> list[Any]:
    """Every column of a transient Batch, with the model's defaults for unset ones."""
    values: list[Any] = []
    for column in Batch.__table__.columns:
        value = getattr(batch, _ATTRIBUTES[column.name])
        default = column.default
        if value is None and default is not None and getattr(default, "is_scalar", False):
            value = default.arg
        elif value is None and default is not None and getattr(default, "is_callable", False):
            value = default.arg(None)
        if column.name in _JSON_COLUMNS and value is not None:
            value = orjson.dumps(value).decode()
        values.append(value)
    return values


_ATTRIBUTES = {c.name: attr.key for attr in Batch.__mapper__.column_attrs for c in attr.columns}
_JSON_COLUMNS = frozenset(
    c.name for c in Batch.__table__.columns if isinstance(c.type.dialect_impl(_PG), JSONB)
)
_BATCH_COLUMNS = [c.name for c in Batch.__table__.columns]


def _insert_at_once_sql() -> str:
    n = len(_BATCH_COLUMNS)
    values = ", ".join(
        f"${i}::jsonb" if name in _JSON_COLUMNS else f"${i}"
        for i, name in enumerate(_BATCH_COLUMNS, start=1)
    )
    batch_id, now = f"${n + 1}", f"${n + 2}"
    emails, variables, statuses, ev_emails, ev_types, ev_data = (f"${n + i}" for i in range(3, 9))
    # Identifiers come from the model; every value is a parameter.
    return f"""
WITH b AS (
    INSERT INTO batches ({", ".join(_BATCH_COLUMNS)}) VALUES ({values})
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


_INSERT_AT_ONCE = _insert_at_once_sql()


async def insert_batch_at_once(
    session: AsyncSession,
    batch: Batch,
    rows: Sequence[tuple[str, dict[str, Any]]],
    suppressed: AbstractSet[str],
    events: Sequence[tuple[str | None, str, dict[str, Any]]],
) -> bool:
    """PostgreSQL: a small batch's row, recipients and events (email, type, data) in one
    statement on the session's connection and transaction: one round trip where the ORM's
    flush and two inserts took three. False (nothing written) on other databases.
    Raises DuplicateBatch if the Idempotency-Key is taken."""
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        return False
    import asyncpg

    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    dumps = orjson.dumps
    pending, held = str(RecipientStatus.PENDING), str(RecipientStatus.SUPPRESSED)
    try:
        await raw.execute(
            _INSERT_AT_ONCE,
            *_batch_values(batch),
            batch.id,
            batch.created_at,
            [email for email, _ in rows],
            [dumps(variables).decode() for _, variables in rows],
            [held if email in suppressed else pending for email, _ in rows],
            [email for email, _, _ in events],
            [str(kind) for _, kind, _ in events],
            [dumps(data).decode() for _, _, data in events],
        )
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateBatch from exc
    return True


async def can_stream_copy(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def copy_checked_recipients(
    session: AsyncSession,
    batch_id: str,
    raw: list[Any],
    checker: RecipientChecker,
    *,
    slice_size: int = 2000,
) -> int:
    """Check the raw recipients slice by slice and COPY each checked slice as it comes
    (PostgreSQL): the checks run while the server writes the rows and their indexes on the
    other core. At the first failure nothing more is copied, but the rest is still checked
    so the caller's checker.finish() reports every error (and the caller rolls back). All
    rows are PENDING; `mark_suppressed` follows. Returns the number of rows copied."""
    conn = await session.connection()
    driver = (await conn.get_raw_connection()).driver_connection
    now = utcnow()
    pending = str(RecipientStatus.PENDING)
    dumps = orjson.dumps
    copied = 0
    position = 0

    async def records() -> AsyncIterator[tuple[Any, ...]]:
        nonlocal copied, position
        while position < len(raw):
            part = raw[position : position + slice_size]
            position += len(part)
            rows = checker.feed(part)
            if checker.error_count:
                return
            with gc_paused():
                ready = [
                    (batch_id, copied + i, email, dumps(variables).decode(), pending, 0, now)
                    for i, (email, variables) in enumerate(rows)
                ]
            copied += len(ready)
            for record in ready:
                yield record

    await driver.copy_records_to_table(  # type: ignore[union-attr]
        "recipients", records=records(), columns=RECIPIENT_COLUMNS
    )
    if position < len(raw):
        checker.feed(raw[position:])
    return copied


async def mark_suppressed(session: AsyncSession, batch_id: str) -> list[tuple[int, str]]:
    """The batch's PENDING recipients whose address is on the suppression list → SUPPRESSED
    (one join on the server); their (seq, email), by seq."""
    result = await session.execute(
        update(Recipient)
        .where(
            Recipient.batch_id == batch_id,
            Recipient.status == RecipientStatus.PENDING,
            Recipient.email == Suppression.email,
        )
        .values(status=RecipientStatus.SUPPRESSED, updated_at=utcnow())
        .returning(Recipient.seq, Recipient.email)
        .execution_options(synchronize_session=False)
    )
    return sorted((int(seq), str(email)) for seq, email in result.tuples())


async def find_by_idempotency_key(session: AsyncSession, api_key_id: str, key: str) -> Batch | None:
    result = await session.scalars(
        select(Batch).where(Batch.api_key_id == api_key_id, Batch.idempotency_key == key)
    )
    return result.first()


async def get(session: AsyncSession, batch_id: str, *, for_update: bool = False) -> Batch | None:
    if for_update:
        result = await session.scalars(select(Batch).where(Batch.id == batch_id).with_for_update())
        return result.first()
    return await session.get(Batch, batch_id)


async def list_batches(
    session: AsyncSession, *, limit: int, offset: int, status: str | None
) -> tuple[Sequence[Batch], int]:
    query = select(Batch)
    count = select(func.count()).select_from(Batch)
    if status:
        query = query.where(Batch.status == status)
        count = count.where(Batch.status == status)
    total = await session.scalar(count)
    rows = await session.scalars(
        query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit).offset(offset)
    )
    return rows.all(), int(total or 0)


async def list_events(
    session: AsyncSession, batch_id: str, *, limit: int, offset: int, type_: str | None
) -> tuple[Sequence[Event], int]:
    where = [Event.batch_id == batch_id]
    if type_:
        where.append(Event.type == type_)
    total = await session.scalar(select(func.count()).select_from(Event).where(*where))
    rows = await session.scalars(
        select(Event).where(*where).order_by(Event.id).limit(limit).offset(offset)
    )
    return rows.all(), int(total or 0)


async def status_counts(session: AsyncSession, batch_id: str) -> dict[str, int]:
    rows = await session.execute(
        select(Recipient.status, func.count())
        .where(Recipient.batch_id == batch_id)
        .group_by(Recipient.status)
    )
    return {status: int(n) for status, n in rows.tuples()}


async def in_flight_counts(
    session: AsyncSession, batch_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Batch id -> {SENDING: n, RETRYING: n} for unfinished batches (the counters cannot
    tell those from PENDING)."""
    rows = await session.execute(
        select(Recipient.batch_id, Recipient.status, func.count())
        .where(
            Recipient.batch_id.in_(batch_ids),
            Recipient.status.in_([RecipientStatus.SENDING.value, RecipientStatus.RETRYING.value]),
        )
        .group_by(Recipient.batch_id, Recipient.status)
    )
    out: dict[str, dict[str, int]] = {}
    for batch_id, status, n in rows.tuples():
        out.setdefault(batch_id, {})[status] = int(n)
    return out


async def sent_window(
    session: AsyncSession, batch_id: str
) -> tuple[datetime | None, datetime | None]:
    row = await session.execute(
        select(func.min(Recipient.sent_at), func.max(Recipient.sent_at)).where(
            Recipient.batch_id == batch_id
        )
    )
    first, last = row.one()
    return first, last


async def cancel_unsent(session: AsyncSession, batch_id: str) -> list[tuple[int, str]]:
    """PENDING/RETRYING recipients → CANCELLED. Claimed (SENDING) ones finish their send."""
    result = await session.execute(
        update(Recipient)
        .where(Recipient.batch_id == batch_id, Recipient.status.in_(CLAIMABLE_STATUSES))
        .values(status=RecipientStatus.CANCELLED, updated_at=utcnow())
        .returning(Recipient.id, Recipient.email)
    )
    return [(int(i), str(e)) for i, e in result.tuples()]


async def expire_idempotency_key(session: AsyncSession, batch: Batch) -> None:
    batch.idempotency_key = None
    await session.flush()


IDEMPOTENCY_WINDOW = timedelta(hours=24)
