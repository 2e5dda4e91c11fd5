"""Queries of the SES webhook: the dedupe rows, the recipients a provider message id names,
their state changes with the batches' counters, soft bounces."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.db.dialect import insert_for
from mailer.models import Batch, Recipient, SoftBounce, WebhookMessage


async def claim_message(
    session: AsyncSession, message_id: str, kind: str, topic_arn: str | None, now: datetime
) -> bool:
    """Insert the dedupe row; False when it already exists (a retry of a processed message)."""
    values = {"message_id": message_id, "type": kind, "topic_arn": topic_arn, "received_at": now}
    stmt = (
        insert_for(session, WebhookMessage)
        .values(values)
        .on_conflict_do_nothing()
        .returning(WebhookMessage.message_id)
    )
    return (await session.execute(stmt)).first() is not None


async def forget_messages_before(session: AsyncSession, cutoff: datetime) -> None:
    """Drop dedupe rows received before `cutoff`."""
    await session.execute(delete(WebhookMessage).where(WebhookMessage.received_at < cutoff))


async def recipients_with_message(
    session: AsyncSession, provider_message_id: str
) -> list[tuple[int, str, str, str]]:
    """(id, batch_id, email, status) of the recipients sent as this provider message."""
    rows = await session.execute(
        select(Recipient.id, Recipient.batch_id, Recipient.email, Recipient.status).where(
            Recipient.provider_message_id == provider_message_id
        )
    )
    return [(int(r.id), str(r.batch_id), str(r.email), str(r.status)) for r in rows]


async def lock_recipients_in(
    session: AsyncSession, ids: Sequence[int], statuses: Sequence[str]
) -> list[tuple[int, str, str]]:
    """Lock the recipients of `ids` whose status is one of `statuses`: (id, batch_id, status)."""
    rows = await session.execute(
        select(Recipient.id, Recipient.batch_id, Recipient.status)
        .where(Recipient.id.in_(ids), Recipient.status.in_(statuses))
        .with_for_update()
    )
    return [(int(i), str(b), str(s)) for i, b, s in rows.tuples()]


async def set_recipients_status(
    session: AsyncSession, ids: Sequence[int], status: str, now: datetime
) -> None:
    await session.execute(
        update(Recipient)
        .where(Recipient.id.in_(ids))
        .values(status=status, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def add_to_batch_counters(
    session: AsyncSession, batch_id: str, deltas: Mapping[str, int]
) -> None:
    """Add to the batch's counter columns (delivered_count, ...); zero deltas are skipped."""
    await session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values({name: getattr(Batch, name) + n for name, n in deltas.items() if n})
    )


async def add_soft_bounces(session: AsyncSession, emails: Sequence[str], now: datetime) -> None:
    await session.execute(insert(SoftBounce), [{"email": e, "created_at": now} for e in emails])


async def soft_bounce_counts(
    session: AsyncSession, emails: Sequence[str], since: datetime
) -> dict[str, int]:
    """Soft bounces per address of `emails` since `since`."""
    rows = await session.execute(
        select(SoftBounce.email, func.count())
        .where(SoftBounce.email.in_(emails), SoftBounce.created_at >= since)
        .group_by(SoftBounce.email)
    )
    return {str(email): int(count) for email, count in rows.tuples()}
