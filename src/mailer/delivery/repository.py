"""The worker's statements: claim a chunk, keep claims alive, record outcomes, complete
batches, write dead letters. One statement per step for the whole chunk."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Batch, DeadLetter, Recipient
from mailer.models.base import utcnow
from mailer.models.enums import (
    CLAIMABLE_STATUSES,
    UNFINISHED_STATUSES,
    BatchStatus,
    RecipientStatus,
)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    seq: int
    email: str
    variables: dict[str, Any]
    attempts: int


def _in_chunk(batch_id: str, seq_start: int, seq_end: int) -> Any:
    return and_(Recipient.batch_id == batch_id, Recipient.seq >= seq_start, Recipient.seq < seq_end)


def _claimable(lease_expired_before: datetime) -> Any:
    return or_(
        Recipient.status.in_(CLAIMABLE_STATUSES),
        and_(
            Recipient.status == RecipientStatus.SENDING,
            Recipient.claimed_at < lease_expired_before,
        ),
    )


async def claim_chunk(
    session: AsyncSession,
    batch_id: str,
    seq_start: int,
    seq_end: int,
    lease: float,
    *,
    limit: int,
    exclude: Collection[int] = (),
) -> list[Claimed]:
    """Move up to `limit` claimable recipients of the chunk (lowest seq first, none of
    `exclude`) to SENDING and return them. Two workers can never both claim one recipient
    (row locks; SKIP LOCKED on PostgreSQL)."""
    now = utcnow()
    where = and_(
        _in_chunk(batch_id, seq_start, seq_end), _claimable(now - timedelta(seconds=lease))
    )
    if exclude:
        where = and_(where, Recipient.id.not_in(list(exclude)))
    ids = select(Recipient.id).where(where).order_by(Recipient.seq).limit(limit)
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id.in_(ids.scalar_subquery()))
        .values(status=RecipientStatus.SENDING, claimed_at=now, updated_at=now)
        .returning(
            Recipient.id, Recipient.seq, Recipient.email, Recipient.variables, Recipient.attempts
        )
        .execution_options(synchronize_session=False)
    )
    rows = [
        Claimed(int(i), int(s), str(e), dict(v or {}), int(a)) for i, s, e, v, a in result.tuples()
    ]
    rows.sort(key=lambda r: r.seq)
    return rows


async def busy_claims_until(
    session: AsyncSession, batch_id: str, seq_start: int, seq_end: int, lease: float
) -> datetime | None:
    """If recipients of the chunk are SENDING under a live claim (another worker, or a
    crashed one whose lease has not run out), when the oldest claim expires."""
    oldest = await session.scalar(
        select(func.min(Recipient.claimed_at)).where(
            _in_chunk(batch_id, seq_start, seq_end),
            Recipient.status == RecipientStatus.SENDING,
        )
    )
    if oldest is None:
        return None
    return oldest + timedelta(seconds=lease)


async def heartbeat(session: AsyncSession, ids: Sequence[int]) -> None:
    if ids:
        await session.execute(
            update(Recipient)
            .where(Recipient.id.in_(ids), Recipient.status == RecipientStatus.SENDING)
            .values(claimed_at=utcnow())
            .execution_options(synchronize_session=False)
        )


async def release(session: AsyncSession, ids: Sequence[int]) -> None:
    """Claimed but never attempted (shutdown, throttling): back to PENDING."""
    if ids:
        await session.execute(
            update(Recipient)
            .where(Recipient.id.in_(ids), Recipient.status == RecipientStatus.SENDING)
            .values(status=RecipientStatus.PENDING, claimed_at=None, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )


async def apply_outcomes(session: AsyncSession, rows: Iterable[dict[str, Any]]) -> None:
    """Bulk UPDATE by primary key (executemany): each row has id, status, attempts and
    optionally provider_message_id, sent_at, last_error."""
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(tuple(sorted(row)), []).append(row)
    for group in grouped.values():
        await session.execute(update(Recipient).execution_options(synchronize_session=False), group)


async def add_batch_counts(session: AsyncSession, batch_id: str, counts: dict[str, int]) -> None:
    values = {name: getattr(Batch, name) + n for name, n in counts.items() if n}
    if values:
        await session.execute(update(Batch).where(Batch.id == batch_id).values(**values))


async def complete_if_done(session: AsyncSession, batch_id: str) -> bool:
    unfinished = exists().where(
        Recipient.batch_id == batch_id, Recipient.status.in_(UNFINISHED_STATUSES)
    )
    result = await session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.SENDING, ~unfinished)
        .values(status=BatchStatus.COMPLETED, completed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def fail_remaining(
    session: AsyncSession, batch_id: str, seq_start: int, seq_end: int, error: str
) -> list[tuple[int, str]]:
    """Exhausted attempts: the chunk's RETRYING recipients → FAILED."""
    result = await session.execute(
        update(Recipient)
        .where(
            _in_chunk(batch_id, seq_start, seq_end),
            Recipient.status == RecipientStatus.RETRYING,
        )
        .values(status=RecipientStatus.FAILED, last_error=error, updated_at=utcnow())
        .returning(Recipient.id, Recipient.email)
        .execution_options(synchronize_session=False)
    )
    return [(int(i), str(e)) for i, e in result.tuples()]


async def add_dead_letter(
    session: AsyncSession,
    batch_id: str,
    seq_start: int,
    seq_end: int,
    recipient_ids: list[int],
    error: str,
    attempts: int,
) -> None:
    session.add(
        DeadLetter(
            batch_id=batch_id,
            seq_start=seq_start,
            seq_end=seq_end,
            recipient_count=len(recipient_ids),
            recipient_ids=recipient_ids,
            error=error,
            attempts=attempts,
            failed_at=utcnow(),
        )
    )
    await session.flush()
