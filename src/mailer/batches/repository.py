"""Queries on batches, recipients and events for the batches API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Batch, Event, Recipient
from mailer.models.base import utcnow
from mailer.models.enums import CLAIMABLE_STATUSES, RecipientStatus

RECIPIENT_COLUMNS = ("batch_id", "seq", "email", "variables", "status", "attempts", "updated_at")


async def insert_recipients(
    session: AsyncSession, batch_id: str, rows: Sequence[tuple[str, dict[str, Any], str]]
) -> None:
    """Bulk insert (email, variables, status) rows with seq = position. COPY on PostgreSQL."""
    now = utcnow()
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        records = [
            (batch_id, seq, email, orjson.dumps(variables).decode(), status, 0, now)
            for seq, (email, variables, status) in enumerate(rows)
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
                "status": status,
                "attempts": 0,
                "updated_at": now,
            }
            for seq, (email, variables, status) in enumerate(rows)
        ],
    )


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
