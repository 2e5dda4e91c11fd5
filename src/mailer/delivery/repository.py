"""The worker's statements: claim a chunk, keep claims alive, record outcomes, complete
batches, write dead letters. One statement per step for the whole chunk.

The two statements on the per-email path (claim, record outcomes) run as hand-written SQL
on the session's asyncpg connection when on PostgreSQL: through SQLAlchemy they cost
~50 µs and ~60-110 µs of CPU per recipient (statement building, an expanding IN, a
parameter set per row, JSON decoding through the stdlib), about half of the whole send
path's budget; this way ~3 µs each (one array parameter per column, orjson).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, case, exists, false, func, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Batch, DeadLetter, Recipient, Suppression, SystemState
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
    suppressed: bool = False  # on the suppression list at the moment of the claim


def _in_chunk(batch_id: str, seq_start: int, seq_end: int) -> Any:
    return and_(Recipient.batch_id == batch_id, Recipient.seq >= seq_start, Recipient.seq < seq_end)


def _worker_alive(dead_before: datetime) -> Any:
    """The claim's worker heartbeated at or after `dead_before`."""
    return (
        exists()
        .select_from(SystemState.__table__)
        .where(
            literal_column("system_state.key") == literal_column("recipients.claimed_by"),
            literal_column("system_state.updated_at") >= dead_before,
        )
    )


def abandoned_claim(lease_expired_before: datetime, dead_before: datetime | None, me: str) -> Any:
    """SENDING rows whose claim may be taken: the claim's worker is dead (no heartbeat since
    `dead_before`; None while this worker may not judge), or, for a claim that names no
    worker, its lease has run out."""
    by_lease = and_(Recipient.claimed_by.is_(None), Recipient.claimed_at < lease_expired_before)
    taken = (
        by_lease
        if dead_before is None
        else or_(
            by_lease,
            and_(
                Recipient.claimed_by.is_not(None),
                Recipient.claimed_by != me,
                ~_worker_alive(dead_before),
            ),
        )
    )
    return and_(Recipient.status == RecipientStatus.SENDING, taken)


def _claimable(lease_expired_before: datetime, dead_before: datetime | None, me: str) -> Any:
    return or_(
        Recipient.status.in_(CLAIMABLE_STATUSES),
        abandoned_claim(lease_expired_before, dead_before, me),
    )


# Qualified by hand: SQLite renders RETURNING columns unqualified, which would turn
# "suppressions.email = recipients.email" into "email = email" (always true).
_SUPPRESSED = (
    exists()
    .select_from(Suppression.__table__)
    .where(literal_column("suppressions.email") == literal_column("recipients.email"))
)


async def claim_chunk(
    session: AsyncSession,
    batch_id: str,
    seq_start: int,
    seq_end: int,
    lease: float,
    *,
    limit: int,
    worker: str,
    dead_before: datetime | None = None,
    exclude: Collection[int] = (),
) -> list[Claimed]:
    """Move up to `limit` claimable recipients of the chunk (lowest seq first, none of
    `exclude`) to SENDING, claimed by `worker` (its heartbeat key), and return them, each
    with whether its (normalized) address is suppressed right now. Claimable: PENDING,
    RETRYING, and claims abandoned by a dead worker (see abandoned_claim). Two workers can
    never both claim one recipient (row locks; SKIP LOCKED on PostgreSQL)."""
    now = utcnow()
    driver = await _asyncpg(session)
    if driver is not None:
        return await _claim_chunk_pg(
            driver, batch_id, seq_start, seq_end, now, lease, limit, exclude, worker, dead_before
        )
    where = and_(
        _in_chunk(batch_id, seq_start, seq_end),
        _claimable(now - timedelta(seconds=lease), dead_before, worker),
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
        .values(status=RecipientStatus.SENDING, claimed_at=now, claimed_by=worker, updated_at=now)
        .returning(
            Recipient.id,
            Recipient.seq,
            Recipient.email,
            Recipient.variables,
            Recipient.attempts,
            _SUPPRESSED,
        )
        .execution_options(synchronize_session=False)
    )
    rows = [
        Claimed(int(i), int(s), str(e), dict(v or {}), int(a), bool(x))
        for i, s, e, v, a, x in result.tuples()
    ]
    rows.sort(key=lambda r: r.seq)
    return rows


async def _asyncpg(session: AsyncSession) -> Any:
    """The session's asyncpg connection (same transaction), or None on SQLite."""
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        return None
    raw = await conn.get_raw_connection()
    return raw.driver_connection


_CLAIM_SQL = """
UPDATE recipients AS r
SET status = 'SENDING', claimed_at = $5, claimed_by = $9, updated_at = $5
FROM (
    SELECT id FROM recipients
    WHERE batch_id = $1 AND seq >= $2 AND seq < $3
      AND (status = ANY($4::text[])
           OR (status = 'SENDING' AND claimed_by IS NULL AND claimed_at < $6)
           OR (status = 'SENDING' AND $10::timestamptz IS NOT NULL AND claimed_by <> $9
               AND NOT EXISTS (SELECT 1 FROM system_state AS w
                               WHERE w.key = recipients.claimed_by AND w.updated_at >= $10)))
      AND NOT (id = ANY($7::bigint[]))
    ORDER BY seq
    LIMIT $8
    FOR UPDATE SKIP LOCKED
) AS c
WHERE r.id = c.id
RETURNING r.id, r.seq, r.email, r.variables::text, r.attempts,
          EXISTS (SELECT 1 FROM suppressions AS s WHERE s.email = r.email)
"""


async def _claim_chunk_pg(
    driver: Any,
    batch_id: str,
    seq_start: int,
    seq_end: int,
    now: datetime,
    lease: float,
    limit: int,
    exclude: Collection[int],
    worker: str,
    dead_before: datetime | None,
) -> list[Claimed]:
    rows = await driver.fetch(
        _CLAIM_SQL,
        batch_id,
        seq_start,
        seq_end,
        [str(s) for s in CLAIMABLE_STATUSES],
        now,
        now - timedelta(seconds=lease),
        list(exclude),
        limit,
        worker,
        dead_before,
    )
    loads = orjson.loads
    claimed = [Claimed(r[0], r[1], r[2], loads(r[3]) if r[3] else {}, r[4], r[5]) for r in rows]
    claimed.sort(key=lambda c: c.seq)
    return claimed


async def busy_claims_until(
    session: AsyncSession,
    batch_id: str,
    seq_start: int,
    seq_end: int,
    *,
    lease: float,
    dead_after: float,
) -> datetime | None:
    """If recipients of the chunk are SENDING under another claim, the earliest moment one
    of them may become claimable: when its worker would be dead if it heartbeats no more
    (a worker without a heartbeat row: now), or for a claim naming no worker, when its
    lease ends. None when the chunk has no SENDING recipient."""
    holders = (
        await session.execute(
            select(Recipient.claimed_by, func.min(Recipient.claimed_at))
            .where(
                _in_chunk(batch_id, seq_start, seq_end),
                Recipient.status == RecipientStatus.SENDING,
            )
            .group_by(Recipient.claimed_by)
        )
    ).all()
    if not holders:
        return None
    now = utcnow()
    keys = [str(k) for k, _ in holders if k is not None]
    beats: dict[str, datetime] = {}
    if keys:
        rows = await session.execute(
            select(SystemState.key, SystemState.updated_at).where(SystemState.key.in_(keys))
        )
        beats = {str(k): at for k, at in rows.tuples()}
    moments = []
    for key, oldest in holders:
        if key is None:
            moments.append((oldest or now) + timedelta(seconds=lease))
        else:
            beat = beats.get(str(key))
            moments.append(now if beat is None else beat + timedelta(seconds=dead_after))
    return min(moments)


async def withdrawn_now(session: AsyncSession, batch_id: str, email: str) -> RecipientStatus | None:
    """The database's answer when a worker's notices may have missed something: CANCELLED
    if the batch is no longer sending, SUPPRESSED if the address is on the list."""
    status = await session.scalar(select(Batch.status).where(Batch.id == batch_id))
    if status is None or status == BatchStatus.CANCELLED:
        return RecipientStatus.CANCELLED
    listed = await session.scalar(select(exists().where(Suppression.email == email)))
    return RecipientStatus.SUPPRESSED if listed else None


async def release(session: AsyncSession, ids: Sequence[int]) -> None:
    """Claimed but never attempted (shutdown, throttling): back to PENDING."""
    if ids:
        await session.execute(
            update(Recipient)
            .where(Recipient.id.in_(ids), Recipient.status == RecipientStatus.SENDING)
            .values(
                status=RecipientStatus.PENDING,
                claimed_at=None,
                claimed_by=None,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )


_OUTCOMES_SQL = """
UPDATE recipients AS r
SET status = u.status,
    attempts = u.attempts,
    updated_at = u.updated_at,
    provider_message_id = CASE WHEN u.sent THEN u.provider_message_id
                               ELSE r.provider_message_id END,
    sent_at = CASE WHEN u.sent THEN u.sent_at ELSE r.sent_at END,
    last_error = CASE WHEN u.set_error THEN u.last_error ELSE r.last_error END
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::timestamptz[], $5::bool[], $6::text[],
            $7::timestamptz[], $8::bool[], $9::text[])
     AS u(id, status, attempts, updated_at, sent, provider_message_id, sent_at, set_error,
          last_error)
WHERE r.id = u.id
"""


async def apply_outcomes(session: AsyncSession, rows: Iterable[dict[str, Any]]) -> None:
    """Bulk UPDATE by primary key: each row has id, status, attempts, updated_at and
    optionally provider_message_id and sent_at (both or neither), last_error. A column a
    row does not name is left as it is. One statement on PostgreSQL (arrays), an
    executemany per row shape on SQLite."""
    driver = await _asyncpg(session)
    if driver is not None:
        await _apply_outcomes_pg(driver, list(rows))
        return
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(tuple(sorted(row)), []).append(row)
    for group in grouped.values():
        await session.execute(update(Recipient).execution_options(synchronize_session=False), group)


async def _apply_outcomes_pg(driver: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns: list[list[Any]] = [[] for _ in range(9)]
    for row in rows:
        sent = "sent_at" in row
        set_error = "last_error" in row
        values = (
            row["id"],
            str(row["status"]),
            row["attempts"],
            row["updated_at"],
            sent,
            row.get("provider_message_id"),
            row.get("sent_at"),
            set_error,
            row.get("last_error"),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    await driver.execute(_OUTCOMES_SQL, *columns)


_RECORD_SQL = """
WITH u AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bool[], $5::text[],
                         $6::bool[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::text[])
        AS u(id, status, attempts, sent, provider_message_id, set_error, last_error,
             batch_id, email, event_type, data)
), recipient_rows AS (
    UPDATE recipients AS r
    SET status = u.status,
        attempts = u.attempts,
        updated_at = $12,
        provider_message_id = CASE WHEN u.sent THEN u.provider_message_id
                                   ELSE r.provider_message_id END,
        sent_at = CASE WHEN u.sent THEN $12 ELSE r.sent_at END,
        last_error = CASE WHEN u.set_error THEN u.last_error ELSE r.last_error END
    FROM u
    WHERE r.id = u.id
), event_rows AS (
    INSERT INTO events (batch_id, recipient_id, email, type, data, created_at)
    SELECT u.batch_id, u.id, u.email, u.event_type, u.data::jsonb, $12 FROM u
), batch_rows AS (
    UPDATE batches AS b
    SET sent_count = b.sent_count + c.sent,
        failed_count = b.failed_count + c.failed,
        suppressed_count = b.suppressed_count + c.suppressed,
        cancelled_count = b.cancelled_count + c.cancelled
    FROM unnest($13::text[], $14::int[], $15::int[], $16::int[], $20::int[])
         AS c(id, sent, failed, suppressed, cancelled)
    WHERE b.id = c.id
)
INSERT INTO metrics (bucket, kind, count)
SELECT $17, m.kind, m.count FROM unnest($18::text[], $19::bigint[]) AS m(kind, count)
ON CONFLICT (bucket, kind) DO UPDATE SET count = metrics.count + EXCLUDED.count
"""


@dataclass(slots=True)
class OutcomeRows:
    """Send outcomes as columns, for record_outcomes_pg. `sent` rows carry a provider
    message id; `set_error` rows a last_error; every row gets an event of `event_type`."""

    ids: list[int]
    statuses: list[str]
    attempts: list[int]
    sent: list[bool]
    provider_message_ids: list[str | None]
    set_error: list[bool]
    errors: list[str | None]
    batch_ids: list[str]
    emails: list[str]
    event_types: list[str]
    event_data: list[str]  # JSON text


async def record_outcomes_pg(
    session: AsyncSession,
    rows: OutcomeRows,
    now: datetime,
    batch_counts: dict[str, dict[str, int]],
    metrics: dict[str, int],
    metrics_bucket: datetime,
) -> bool:
    """Recipients' new states, their events, the batches' counters and the minute's metrics
    in ONE statement (data-modifying CTEs: atomic, one round trip). False on SQLite."""
    driver = await _asyncpg(session)
    if driver is None:
        return False
    counted = sorted(batch_counts)  # fixed lock order across workers
    kinds = sorted(k for k, n in metrics.items() if n)
    await driver.execute(
        _RECORD_SQL,
        rows.ids,
        rows.statuses,
        rows.attempts,
        rows.sent,
        rows.provider_message_ids,
        rows.set_error,
        rows.errors,
        rows.batch_ids,
        rows.emails,
        rows.event_types,
        rows.event_data,
        now,
        counted,
        [batch_counts[b].get("sent_count", 0) for b in counted],
        [batch_counts[b].get("failed_count", 0) for b in counted],
        [batch_counts[b].get("suppressed_count", 0) for b in counted],
        metrics_bucket,
        kinds,
        [metrics[k] for k in kinds],
        [batch_counts[b].get("cancelled_count", 0) for b in counted],
    )
    return True


async def add_batch_counts(session: AsyncSession, batch_id: str, counts: dict[str, int]) -> None:
    values = {name: getattr(Batch, name) + n for name, n in counts.items() if n}
    if values:
        await session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


async def complete_if_done(
    session: AsyncSession, batch_id: str, *, trust_counters: bool = True
) -> bool:
    """SENDING → COMPLETED once no recipient is PENDING, SENDING or RETRYING.

    The batch's counters are kept in the same transactions as the recipients' states, so
    while they say work remains the recipients are not scanned (there is no (batch_id,
    status) index: ingest would pay for it). When they say done, the recipients are checked.
    `trust_counters=False` (the reconciler's last resort) always checks the recipients.
    """
    unfinished = exists().where(
        Recipient.batch_id == batch_id, Recipient.status.in_(UNFINISHED_STATUSES)
    )
    finished = (
        Batch.sent_count + Batch.failed_count + Batch.suppressed_count + Batch.cancelled_count
    )
    # CASE, not AND: SQL does not promise to evaluate AND's operands in order.
    done = case((finished >= Batch.total_recipients, ~unfinished), else_=false())
    result = await session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            Batch.status == BatchStatus.SENDING,
            ~unfinished if not trust_counters else done,
        )
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
