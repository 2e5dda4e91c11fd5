"""One-click unsubscribe (RFC 8058): token → recipient → suppression with reason UNSUBSCRIBE."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.events import bump_metrics, record_events
from mailer.models import Recipient
from mailer.models.base import utcnow
from mailer.models.enums import EventType, MetricKind, SuppressionReason
from mailer.suppressions import service as suppressions
from mailer.unsubscribe.tokens import read_token


async def recipient_for_token(session: AsyncSession, token: str, key: bytes) -> Recipient | None:
    recipient_id = read_token(token, key)
    if recipient_id is None:
        return None
    return await session.get(Recipient, recipient_id)


async def unsubscribe(session: AsyncSession, recipient: Recipient) -> bool:
    """Suppress the recipient's address. True if it was not suppressed before."""
    added = await suppressions.add(
        session,
        [recipient.email],
        SuppressionReason.UNSUBSCRIBE,
        {"type": "list-unsubscribe", "batchId": recipient.batch_id, "recipientId": recipient.id},
    )
    await record_events(
        session,
        [
            {
                "batch_id": recipient.batch_id,
                "recipient_id": recipient.id,
                "email": recipient.email,
                "type": EventType.UNSUBSCRIBE,
                "data": {"method": "one-click", "new": bool(added)},
                "created_at": utcnow(),
            }
        ],
    )
    if added:
        await bump_metrics(session, {MetricKind.UNSUBSCRIBED: 1, MetricKind.SUPPRESSED: 1})
    return bool(added)
