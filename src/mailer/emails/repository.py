"""Queries for /emails: attachments, a new email's message ids, message lookup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Attachment, Batch, Recipient
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
