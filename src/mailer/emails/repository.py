"""Queries for /emails: attachments, a new email's message ids, message lookup."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Attachment, Batch, Event, Recipient, Template, TemplateVersion
from mailer.transports.base import MailAttachment


async def add_attachments(
    session: AsyncSession, batch_id: str, files: Sequence[MailAttachment]
) -> None:
    await session.execute(
        insert(Attachment),
        [
            {
                "batch_id": batch_id,
                "position": i,
                "filename": f.filename,
                "content_type": f.content_type,
                "content": f.content,
            }
            for i, f in enumerate(files)
        ],
    )


async def recipient_ids(session: AsyncSession, batch_id: str) -> dict[int, int]:
    """seq -> recipient id of a batch (a small one: POST /emails)."""
    rows = await session.execute(
        select(Recipient.seq, Recipient.id).where(Recipient.batch_id == batch_id)
    )
    return {int(seq): int(rid) for seq, rid in rows.tuples()}


async def save_response(session: AsyncSession, batch_id: str, response: dict[str, Any]) -> None:
    await session.execute(update(Batch).where(Batch.id == batch_id).values(response=response))


MessageRow = tuple[Recipient, Batch, TemplateVersion, Template]


def _message_select() -> Any:
    return (
        select(Recipient, Batch, TemplateVersion, Template)
        .join(Batch, Batch.id == Recipient.batch_id)
        .join(TemplateVersion, TemplateVersion.id == Batch.template_version_id)
        .join(Template, Template.id == Batch.template_id)
    )


async def get_message(session: AsyncSession, message_id: int) -> MessageRow | None:
    row = (await session.execute(_message_select().where(Recipient.id == message_id))).first()
    return None if row is None else (row[0], row[1], row[2], row[3])


async def message_events(session: AsyncSession, message_ids: Sequence[int]) -> list[Event]:
    """The events of these messages (by the recipient_id index), oldest first."""
    if not message_ids:
        return []
    rows = await session.scalars(
        select(Event).where(Event.recipient_id.in_(list(message_ids))).order_by(Event.id)
    )
    return list(rows.all())


async def find_messages(
    session: AsyncSession,
    *,
    to: str | None,
    status: str | None,
    batch_id: str | None,
    tag: tuple[str, str] | None,
    since: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[MessageRow]:
    """Messages, newest first (by id), below `before_id` (the cursor). `to` uses the
    address index and `batch_id` the (batch_id, seq) one; the other filters narrow those,
    or walk the primary key downwards from the cursor."""
    stmt = _message_select()
    if to is not None:
        stmt = stmt.where(Recipient.email == to)
    if batch_id is not None:
        stmt = stmt.where(Recipient.batch_id == batch_id)
    if status is not None:
        stmt = stmt.where(Recipient.status == status)
    if tag is not None:
        stmt = stmt.where(Batch.tags[tag[0]].as_string() == tag[1])
    if since is not None:
        stmt = stmt.where(Batch.created_at >= since)
    if before_id is not None:
        stmt = stmt.where(Recipient.id < before_id)
    rows = await session.execute(stmt.order_by(Recipient.id.desc()).limit(limit))
    return [(r[0], r[1], r[2], r[3]) for r in rows.all()]
