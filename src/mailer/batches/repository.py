"""Queries on batches, recipients and events for the batches API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.batches.ingest import RecipientChecker, gc_paused
from mailer.events import COPY_MIN_ROWS
from mailer.models import Batch, Event, Recipient, Suppression
from mailer.models.base import utcnow
from mailer.models.enums import CLAIMABLE_STATUSES, RecipientStatus

RECIPIENT_COLUMNS = ("batch_id", "seq", "email", "variables", "status", "attempts", "updated_at")


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
