"""Queries on dead letters and the recipients a retry revives."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Batch, DeadLetter, Recipient
from mailer.models.enums import RecipientStatus


async def list_page(
    session: AsyncSession, *, limit: int, offset: int, batch_id: str | None = None
) -> tuple[Sequence[DeadLetter], int]:
    where = [DeadLetter.batch_id == batch_id] if batch_id else []
    total = await session.scalar(select(func.count()).select_from(DeadLetter).where(*where))
    rows = await session.scalars(
        select(DeadLetter).where(*where).order_by(DeadLetter.id).limit(limit).offset(offset)
    )
    return rows.all(), int(total or 0)


async def lock_all(session: AsyncSession, ids: Sequence[int] | None) -> Sequence[DeadLetter]:
    """The dead letters (all, or those of `ids`) by id, locked."""
    query = select(DeadLetter).order_by(DeadLetter.id).with_for_update()
    if ids is not None:
        query = query.where(DeadLetter.id.in_(ids))
    return (await session.scalars(query)).all()


async def lock_batch(session: AsyncSession, batch_id: str) -> Batch | None:
    return await session.get(Batch, batch_id, with_for_update=True)


async def revive_failed(
    session: AsyncSession, recipient_ids: Sequence[int], now: datetime
) -> list[tuple[int, str]]:
    """The FAILED recipients among `recipient_ids` → RETRYING; their (id, email)."""
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id.in_(recipient_ids), Recipient.status == RecipientStatus.FAILED)
        .values(status=RecipientStatus.RETRYING, updated_at=now)
        .returning(Recipient.id, Recipient.email)
        .execution_options(synchronize_session=False)
    )
    return [(int(i), str(e)) for i, e in result.tuples()]


async def remove(session: AsyncSession, letter: DeadLetter) -> None:
    await session.delete(letter)


async def purge(
    session: AsyncSession, *, before: datetime | None = None, ids: Sequence[int] | None = None
) -> int:
    statement = delete(DeadLetter)
    if before is not None:
        statement = statement.where(DeadLetter.failed_at < before)
    if ids is not None:
        statement = statement.where(DeadLetter.id.in_(ids))
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
