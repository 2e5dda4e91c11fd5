"""The console's SQL: its sessions, and the keyset-paginated reads its pages make.

No page counts rows of a big table: lists fetch one row more than they show to know whether
a next page exists, and batch totals come from the batch's own counters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import (
    ApiKey,
    Batch,
    ConsoleSession,
    DeadLetter,
    Event,
    Recipient,
    Suppression,
    Template,
    TemplateVersion,
)
from mailer.models.enums import RecipientStatus

# -- sessions -----------------------------------------------------------------------------


async def insert_session(session: AsyncSession, row: ConsoleSession) -> None:
    session.add(row)
    await session.flush()


async def session_with_key(
    session: AsyncSession, session_id: str
) -> tuple[ConsoleSession, ApiKey] | None:
    row = (
        await session.execute(
            select(ConsoleSession, ApiKey)
            .join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
            .where(ConsoleSession.id == session_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def touch_session(session: AsyncSession, session_id: str, now: datetime) -> None:
    await session.execute(
        update(ConsoleSession).where(ConsoleSession.id == session_id).values(last_seen_at=now)
    )


async def delete_session(session: AsyncSession, session_id: str) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))


async def delete_sessions_of_key(session: AsyncSession, key_id: str) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.api_key_id == key_id))


# -- batches ------------------------------------------------------------------------------


async def messages_in_flight(session: AsyncSession) -> int:
    """Recipients claimed by a worker right now (the partial index of SENDING rows)."""
    count = await session.scalar(
        select(func.count())
        .select_from(Recipient)
        .where(Recipient.status == RecipientStatus.SENDING)
    )
    return int(count or 0)


async def batches_page(
    session: AsyncSession,
    *,
    limit: int,
    before: str | None,
    status: str | None,
    tag: tuple[str, str] | None,
) -> Sequence[Batch]:
    """Newest first (ids are time-ordered), `limit + 1` rows."""
    query = select(Batch)
    if before:
        query = query.where(Batch.id < before)
    if status:
        query = query.where(Batch.status == status)
    if tag is not None:
        name, value = tag
        query = query.where(Batch.tags[name].as_string() == value)
    rows = await session.scalars(query.order_by(Batch.id.desc()).limit(limit + 1))
    return rows.all()


async def batch_events(
    session: AsyncSession, batch_id: str, *, limit: int, after: int | None, type_: str | None
) -> Sequence[Event]:
    query = select(Event).where(Event.batch_id == batch_id)
    if type_:
        query = query.where(Event.type == type_)
    if after is not None:
        query = query.where(Event.id > after)
    rows = await session.scalars(query.order_by(Event.id).limit(limit + 1))
    return rows.all()


async def batch_failures(
    session: AsyncSession, batch_id: str, *, limit: int, after: int | None
) -> Sequence[Recipient]:
    query = select(Recipient).where(
        Recipient.batch_id == batch_id, Recipient.status == RecipientStatus.FAILED
    )
    if after is not None:
        query = query.where(Recipient.seq > after)
    rows = await session.scalars(query.order_by(Recipient.seq).limit(limit + 1))
    return rows.all()


# -- one address --------------------------------------------------------------------------


async def messages_to(session: AsyncSession, email: str, *, limit: int) -> Sequence[Recipient]:
    rows = await session.scalars(
        select(Recipient).where(Recipient.email == email).order_by(Recipient.id.desc()).limit(limit)
    )
    return rows.all()


async def events_of(
    session: AsyncSession, recipient_ids: Sequence[int], *, limit: int
) -> Sequence[Event]:
    if not recipient_ids:
        return []
    rows = await session.scalars(
        select(Event).where(Event.recipient_id.in_(recipient_ids)).order_by(Event.id).limit(limit)
    )
    return rows.all()


# -- suppressions, dead letters, templates ------------------------------------------------


async def suppressions_page(
    session: AsyncSession, *, prefix: str | None, after: str | None, limit: int
) -> Sequence[Suppression]:
    """In address order (the primary key), optionally those starting with `prefix`."""
    query = select(Suppression)
    if prefix:
        query = query.where(Suppression.email >= prefix, Suppression.email < prefix + "\U0010ffff")
    if after:
        query = query.where(Suppression.email > after)
    rows = await session.scalars(query.order_by(Suppression.email).limit(limit + 1))
    return rows.all()


async def dead_letters_page(
    session: AsyncSession, *, after: int | None, limit: int
) -> Sequence[DeadLetter]:
    query = select(DeadLetter)
    if after is not None:
        query = query.where(DeadLetter.id > after)
    rows = await session.scalars(query.order_by(DeadLetter.id).limit(limit + 1))
    return rows.all()


async def template_versions(
    session: AsyncSession, template_id: str, *, limit: int
) -> Sequence[TemplateVersion]:
    rows = await session.scalars(
        select(TemplateVersion)
        .where(TemplateVersion.template_id == template_id)
        .order_by(TemplateVersion.version.desc())
        .limit(limit)
    )
    return rows.all()


async def template_version(
    session: AsyncSession, template_id: str, version: int
) -> TemplateVersion | None:
    return (
        await session.scalars(
            select(TemplateVersion).where(
                TemplateVersion.template_id == template_id, TemplateVersion.version == version
            )
        )
    ).first()


async def templates_page(
    session: AsyncSession, *, before: str | None, limit: int
) -> Sequence[tuple[Template, TemplateVersion]]:
    query = (
        select(Template, TemplateVersion)
        .join(TemplateVersion, TemplateVersion.id == Template.current_version_id)
        .where(Template.deleted_at.is_(None))
    )
    if before:
        query = query.where(Template.id < before)
    rows = await session.execute(query.order_by(Template.id.desc()).limit(limit + 1))
    return [(t, v) for t, v in rows.tuples()]
