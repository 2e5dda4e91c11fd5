"""The worker's statements: claim a chunk (or a dead worker's claims), record outcomes, complete
batches, write dead letters. One statement per step for the whole chunk.

The two statements on the per-email path (claim, record outcomes) have a hand-written
PostgreSQL version in `mailer.db.pg` (a few µs of CPU per recipient where SQLAlchemy takes
50-110 µs); the functions here are the portable versions and choose that one there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, case, exists, false, func, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.db import pg
from mailer.db.dialect import postgresql_variant
from mailer.events import bump_metrics, minute_bucket, record_events
from mailer.models import (
    Attachment,
    Batch,
    DeadLetter,
    Recipient,
    Suppression,
    SystemState,
    TemplateVersion,
)
from mailer.models.base import utcnow
from mailer.models.enums import (
    CLAIMABLE_STATUSES,
    UNFINISHED_STATUSES,
    BatchStatus,
    RecipientStatus,
)
from mailer.transports.base import MailAttachment
from mailer.webhook_endpoints import catalog, outbox


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


def _suppressed(ignored_reasons: Collection[str]) -> Any:
    if not ignored_reasons:
        return _SUPPRESSED
    return (
        exists()
        .select_from(Suppression.__table__)
        .where(
            literal_column("suppressions.email") == literal_column("recipients.email"),
            literal_column("suppressions.reason").not_in(list(ignored_reasons)),
        )
    )


_CLAIMABLE = [str(s) for s in CLAIMABLE_STATUSES]


async def _claim_chunk_pg(
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
    ignored_reasons: Collection[str] = (),
) -> list[Claimed]:
    now = utcnow()
    rows = await pg.claim(
        session,
        batch_id,
        seq_start,
        seq_end,
        _CLAIMABLE,
        now,
        now - timedelta(seconds=lease),
        list(exclude),
        limit,
        worker,
        dead_before,
        list(ignored_reasons),
    )
    loads = orjson.loads
    claimed = [Claimed(r[0], r[1], r[2], loads(r[3]) if r[3] else {}, r[4], r[5]) for r in rows]
    claimed.sort(key=lambda c: c.seq)
    return claimed


@postgresql_variant(_claim_chunk_pg)
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
    ignored_reasons: Collection[str] = (),
) -> list[Claimed]:
    """Move up to `limit` claimable recipients of the chunk (lowest seq first, none of
    `exclude`) to SENDING, claimed by `worker` (its heartbeat key), and return them, each
    with whether its (normalized) address is suppressed right now. Claimable: PENDING,
    RETRYING, and claims abandoned by a dead worker (see abandoned_claim). Suppressions for
    `ignored_reasons` do not count (transactional mail ignores unsubscribes). Two workers can
    never both claim one recipient (row locks; SKIP LOCKED on PostgreSQL)."""
    now = utcnow()
    where = and_(
        _in_chunk(batch_id, seq_start, seq_end),
        _claimable(now - timedelta(seconds=lease), dead_before, worker),
    )
    if exclude:
        where = and_(where, Recipient.id.not_in(list(exclude)))
    ids = select(Recipient.id).where(where).order_by(Recipient.seq).limit(limit)
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
            _suppressed(ignored_reasons),
        )
        .execution_options(synchronize_session=False)
    )
    rows = [
        Claimed(int(i), int(s), str(e), dict(v or {}), int(a), bool(x))
        for i, s, e, v, a, x in result.tuples()
    ]
    rows.sort(key=lambda r: r.seq)
    return rows


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


async def withdrawn_now(
    session: AsyncSession, batch_id: str, email: str, ignored_reasons: Collection[str] = ()
) -> RecipientStatus | None:
    """The database's answer when a worker's notices may have missed something: CANCELLED
    if the batch was cancelled, SUPPRESSED if the address is on the list (for another
    reason than one of `ignored_reasons`)."""
    status = await session.scalar(select(Batch.status).where(Batch.id == batch_id))
    if status is None or status == BatchStatus.CANCELLED:
        return RecipientStatus.CANCELLED
    listed_for = [Suppression.email == email]
    if ignored_reasons:
        listed_for.append(Suppression.reason.not_in(list(ignored_reasons)))
    listed = await session.scalar(select(exists().where(*listed_for)))
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


@dataclass(slots=True)
class OutcomeRows:
    """Send outcomes as columns, built once by the recorder and written by record_outcomes.
    A `sent` row sets provider_message_id and sent_at; a `set_error` row sets last_error
    (None for a SENT row: sending clears the last error); every row gets an event of
    `event_type` with `event_data`."""

    now: datetime
    ids: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    sent: list[bool] = field(default_factory=list)
    provider_message_ids: list[str | None] = field(default_factory=list)
    set_error: list[bool] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    batch_ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    event_data: list[dict[str, Any]] = field(default_factory=list)
    batch_counts: dict[str, Counter[str]] = field(default_factory=dict)  # batch → counter → n
    metrics: Counter[str] = field(default_factory=Counter)

    def event_rows(self) -> Iterator[dict[str, Any]]:
        """The outcomes' events as `record_events` takes them."""
        for i, rid in enumerate(self.ids):
            yield {
                "batch_id": self.batch_ids[i],
                "recipient_id": rid,
                "email": self.emails[i],
                "type": self.event_types[i],
                "data": self.event_data[i],
                "created_at": self.now,
            }


async def _record_outcomes_pg(session: AsyncSession, rows: OutcomeRows) -> None:
    counted = sorted(rows.batch_counts)  # fixed lock order across workers
    kinds = sorted(k for k, n in rows.metrics.items() if n)
    dumps = orjson.dumps
    await pg.record_outcomes(
        session,
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
        [dumps(data).decode() for data in rows.event_data],
        rows.now,
        counted,
        [rows.batch_counts[b].get("sent_count", 0) for b in counted],
        [rows.batch_counts[b].get("failed_count", 0) for b in counted],
        [rows.batch_counts[b].get("suppressed_count", 0) for b in counted],
        minute_bucket(rows.now),
        kinds,
        [rows.metrics[k] for k in kinds],
        [rows.batch_counts[b].get("cancelled_count", 0) for b in counted],
    )
    await outbox.add_from_events(session, rows.event_rows())  # outbound webhooks


@postgresql_variant(_record_outcomes_pg)
async def record_outcomes(session: AsyncSession, rows: OutcomeRows) -> None:
    """Recipients' new states, their events, the batches' counters and the minute's
    metrics. On PostgreSQL one statement (data-modifying CTEs: one round trip); here an
    executemany per row shape, an insert of the events and an update per batch."""
    now = rows.now
    updates: list[dict[str, Any]] = []
    for i, rid in enumerate(rows.ids):
        row: dict[str, Any] = {
            "id": rid,
            "status": rows.statuses[i],
            "attempts": rows.attempts[i],
            "updated_at": now,
        }
        if rows.sent[i]:
            row["provider_message_id"] = rows.provider_message_ids[i]
            row["sent_at"] = now
        if rows.set_error[i]:
            row["last_error"] = rows.errors[i]
        updates.append(row)
    await _apply_outcomes(session, updates)
    await record_events(session, list(rows.event_rows()))
    for batch_id, counts in rows.batch_counts.items():
        await add_batch_counts(session, batch_id, dict(counts))
    await bump_metrics(session, dict(rows.metrics), at=now)


async def _apply_outcomes(session: AsyncSession, rows: Iterable[dict[str, Any]]) -> None:
    """Bulk UPDATE by primary key, an executemany per row shape (a column a row does not
    name is left as it is)."""
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(tuple(sorted(row)), []).append(row)
    for group in grouped.values():
        await session.execute(update(Recipient).execution_options(synchronize_session=False), group)


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
    completed = bool(result.rowcount)  # type: ignore[attr-defined]
    if completed:
        await outbox.add_event(
            session, catalog.BATCH_COMPLETED, {"batchId": batch_id}, batch_id=batch_id
        )
    return completed


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


async def batch_for_sending(
    session: AsyncSession, batch_id: str
) -> tuple[Batch | None, TemplateVersion | None, tuple[MailAttachment, ...]]:
    """The batch (fresh from the database), its template version and the files sent with
    every message (request order, usually none), in one statement: a worker loads this for
    every batch it sends, and for a transactional email (a batch of its own) it is on the
    path to the provider (bench/priority: each round trip counts in the tail)."""
    rows = (
        await session.execute(
            select(Batch, TemplateVersion, Attachment.filename, Attachment.content_type)
            .add_columns(Attachment.content)
            .outerjoin(TemplateVersion, TemplateVersion.id == Batch.template_version_id)
            .outerjoin(Attachment, Attachment.batch_id == Batch.id)
            .where(Batch.id == batch_id)
            .order_by(Attachment.position)
            .execution_options(populate_existing=True)
        )
    ).all()
    if not rows:
        return None, None, ()
    batch, version = rows[0][0], rows[0][1]
    files = tuple(
        MailAttachment(name, kind, bytes(content))
        for _, _, name, kind, content in rows
        if name is not None
    )
    return batch, version, files
