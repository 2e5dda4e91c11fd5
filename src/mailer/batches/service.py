"""Batches: create (durable before acknowledged), read, summarize, cancel."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formataddr
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.addresses import InvalidAddress, normalize_email, parse_mailbox, try_normalize_email
from mailer.auth.principal import Principal
from mailer.batches import repository
from mailer.batches.dispatch import enqueue_after_commit
from mailer.batches.ingest import ParsedRequest, RecipientChecker
from mailer.batches.schemas import BatchResult
from mailer.control_chars import has_control_chars
from mailer.db import pg
from mailer.db.dialect import single_statement_writes
from mailer.db.reads import Reads
from mailer.delivery.withdrawals import announce_cancelled
from mailer.errors import Conflict, NotFound, ValidationFailed
from mailer.events import bump_metrics, record_events
from mailer.models import Batch
from mailer.models.base import iso_utc, utcnow
from mailer.models.enums import BatchPriority, BatchStatus, EventType, MetricKind, RecipientStatus
from mailer.queue.base import ChunkJob, JobQueue
from mailer.suppressions.service import suppressed_among
from mailer.templates.usage import UNSUBSCRIBE_URL
from mailer.templates.versions import undeclared, used_variables, version_specs
from mailer.webhook_endpoints import catalog, outbox

FINAL_BATCH_STATUSES = (BatchStatus.COMPLETED, BatchStatus.CANCELLED)
STREAM_MIN_RECIPIENTS = 2000
# Batches up to this size have their addresses normalized once more before the checks, so
# the suppression lookup can go with the template's (~2.5 µs an address).
PROBE_MAX_RECIPIENTS = 100


def _normal_forms(raw: list[Any]) -> list[str]:
    """The normal forms of the valid addresses among raw recipients (the checks come later)."""
    found: dict[str, None] = {}
    for item in raw:
        email = item.get("email") if isinstance(item, dict) else None
        if isinstance(email, str):
            normal = try_normalize_email(email)
            if normal is not None:
                found[normal] = None
    return list(found)


@dataclass(slots=True)
class CreateResult:
    response: dict[str, Any]
    replayed: bool
    jobs: list[ChunkJob]


def request_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def chunk_jobs(batch_id: str, total: int, chunk_size: int, *, high: bool = False) -> list[ChunkJob]:
    return [
        ChunkJob(batch_id, start, min(start + chunk_size, total), high=high)
        for start in range(0, total, chunk_size)
    ]


def check_sender(value: str, field: str) -> str:
    if has_control_chars(value):
        raise ValidationFailed(
            f"'{field}' contains control characters.",
            details=[{"field": field, "message": "must not contain CR, LF or control characters"}],
        )
    try:
        name, addr = parse_mailbox(value)
        normalized = normalize_email(addr)
    except InvalidAddress as exc:
        raise ValidationFailed(
            f"'{field}' is not a valid address.",
            details=[{"field": field, "message": f"invalid address: {exc}"}],
        ) from None
    return formataddr((name, normalized)) if name else normalized


async def replay_or_conflict(
    session: AsyncSession, principal: Principal, key: str, digest: str
) -> dict[str, Any] | None:
    """The stored answer of the request this Idempotency-Key already names, None if it
    names none (or an expired one, now forgotten); Conflict if its body was another."""
    existing = await repository.find_by_idempotency_key(session, principal.key_id, key)
    if existing is None:
        return None
    if utcnow() - existing.created_at > repository.IDEMPOTENCY_WINDOW:
        await repository.expire_idempotency_key(session, existing.id)
        return None
    if existing.request_hash != digest:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body.",
            code="idempotency_conflict",
        )
    return existing.response or {}


async def writes_in_one_statement(
    session: AsyncSession, parsed: ParsedRequest, pool: pg.DriverPool | None
) -> None:
    """Called by the API on its request session before `create_batch`: a batch that is not
    streamed is written by one statement (repository.insert_batch) after reads only, so on
    PostgreSQL the session can run without BEGIN/COMMIT (two round trips of a small POST's
    four; tests/batches/test_round_trips.py), its statements on a connection of the API's
    `pool` (`pg.single_statement_unit`). The insert commits when it returns, before the
    201, as the request's commit did. Callers that commit themselves do not call it.
    Not while a webhook endpoint is enabled: the batch's events may then add outbox rows in
    a second statement, which must commit with the batch."""
    if len(parsed.raw_recipients) < STREAM_MIN_RECIPIENTS and not await outbox.any_enabled(session):
        await one_statement(session, pool)


async def one_statement(session: AsyncSession, pool: pg.DriverPool | None) -> None:
    """A unit of work whose writes are one statement after reads: on the API's pool of
    connections if it has one (`pg.single_statement_unit`), else on the session's own."""
    if pool is None:
        await single_statement_writes(session)
    else:
        await pg.single_statement_unit(session, pool)


async def create_batch(
    session: AsyncSession,
    principal: Principal,
    parsed: ParsedRequest,
    *,
    body_hash: str,
    idempotency_key: str | None,
    chunk_size: int,
    queue: JobQueue,
) -> CreateResult:
    """Store the batch, its recipients and its events; its chunks are enqueued once the
    session commits."""
    raw = parsed.raw_recipients
    # Large batches on PostgreSQL are checked while they are copied (see
    # copy_checked_recipients); a failure rolls the whole transaction back.
    stream = len(raw) >= STREAM_MIN_RECIPIENTS and repository.can_stream_copy(session)
    if idempotency_key is not None:
        if not idempotency_key.strip():
            raise ValidationFailed(
                "The Idempotency-Key header is empty.",
                details=[{"field": "header:Idempotency-Key", "message": "must not be blank"}],
            )
        replayed = await replay_or_conflict(session, principal, idempotency_key, body_hash)
        if replayed is not None:
            return CreateResult(replayed, replayed=True, jobs=[])

    options = parsed.options
    # A small batch's addresses are looked up on the suppression list with the template.
    probed = [] if stream or len(raw) > PROBE_MAX_RECIPIENTS else _normal_forms(raw)
    context = await repository.batch_context(session, options.template_id, probed)
    if context is None:
        field = parsed.sent_as("template_id")
        raise ValidationFailed(
            f"Template {options.template_id!r} does not exist ({field}).",
            details=[{"field": field, "message": "no template with this id", "type": "not_found"}],
        )
    version = context.version
    used = await used_variables(version)
    if UNSUBSCRIBE_URL in used and not options.unsubscribe:
        raise ValidationFailed(
            "The template uses {{unsubscribe_url}} but the batch has no unsubscribe link.",
            details=[
                {
                    "field": parsed.sent_as("unsubscribe"),
                    "message": "the template places {{unsubscribe_url}}: unsubscribe must be true",
                    "type": "unsubscribe_required",
                }
            ],
        )
    checker = RecipientChecker(
        version_specs(version),
        has_nul=parsed.may_contain_nul,
        expected=() if options.allow_missing_variables else undeclared(version, used),
    )
    rows: list[tuple[str, dict[str, Any]]] = []
    if not stream:
        rows = checker.feed(raw)
        checker.finish()
    sender_error: ValidationFailed | None = None
    try:
        from_address = check_sender(options.from_, "from") if options.from_ else None
        reply_to_raw = (
            [options.reply_to] if isinstance(options.reply_to, str) else options.reply_to or []
        )
        reply_to_field = parsed.sent_as("reply_to")
        reply_to = [check_sender(r, f"{reply_to_field}[{i}]") for i, r in enumerate(reply_to_raw)]
    except ValidationFailed as exc:
        if not stream:
            raise
        sender_error, from_address, reply_to = exc, None, []  # reported after the recipients

    suppressed: set[str] = set()
    if not stream:
        suppressed = {email for email, _ in rows if email in context.suppressed}
        probed_set = set(probed)
        unprobed = [email for email, _ in rows if email not in probed_set]
        if unprobed:
            # Ingest holds normal forms already: no second normalization of the addresses.
            suppressed |= await suppressed_among(session, unprobed, normalized=True)
    now = utcnow()
    scheduled = options.send_at is not None and options.send_at > now
    batch = Batch.new(
        scheduled=scheduled,
        now=now,
        template_id=context.template_id,
        template_version_id=version.id,
        metadata_=options.metadata,
        tags=options.tags,
        send_at=options.send_at,
        from_address=from_address,
        reply_to=reply_to,
        unsubscribe=options.unsubscribe,
        priority=options.priority,
        api_key_id=principal.key_id,
        idempotency_key=idempotency_key,
        request_hash=body_hash if idempotency_key else None,
        total_recipients=len(rows),
        duplicate_count=checker.duplicates,
        suppressed_count=len(suppressed),
        chunk_size=chunk_size,
    )
    if not stream:
        # Everything is known before the insert: the batch row goes out once, complete.
        suppressed_rows = [
            (seq, email) for seq, (email, _) in enumerate(rows) if email in suppressed
        ]
        total = len(rows)
        _finish(batch, options.send_at, now, total, len(suppressed_rows), checker.duplicates)
        events = _events(total - len(suppressed_rows), scheduled, suppressed_rows)
        try:
            await repository.insert_batch(
                session, batch, rows, suppressed, events, len(suppressed_rows)
            )
        except repository.DuplicateBatch:
            raise _idempotency_race() from None
    else:
        await _add(session, batch)
        total = await repository.copy_checked_recipients(session, batch.id, raw, checker)
        checker.finish()
        if sender_error is not None:
            raise sender_error
        suppressed_rows = await repository.mark_suppressed(session, batch.id)
        batch.total_recipients = total
        batch.duplicate_count = checker.duplicates
        batch.suppressed_count = len(suppressed_rows)
        _finish(batch, options.send_at, now, total, len(suppressed_rows), checker.duplicates)
        events = _events(total - len(suppressed_rows), scheduled, suppressed_rows)
        await record_events(session, _event_rows(batch.id, events, now))
    queued = total - len(suppressed_rows)
    if stream:
        if suppressed_rows:
            await bump_metrics(session, {MetricKind.SUPPRESSED: len(suppressed_rows)})
        await session.flush()  # the counters and response found while copying
    response = batch.response or {}
    high = BatchPriority(options.priority) is BatchPriority.HIGH
    jobs = [] if scheduled or queued == 0 else chunk_jobs(batch.id, total, chunk_size, high=high)
    # No write after the enqueue: the reconciler's grace counts from the batch's start,
    # which the batch's own insert recorded (a transaction fewer per POST).
    if batch.status == BatchStatus.COMPLETED:  # nothing to send: done at once
        await outbox.add_event(
            session, catalog.BATCH_COMPLETED, {"batchId": batch.id}, batch_id=batch.id, at=now
        )
    enqueue_after_commit(session, queue, jobs)
    return CreateResult(response, replayed=False, jobs=jobs)


async def _add(session: AsyncSession, batch: Batch) -> None:
    session.add(batch)
    try:
        await session.flush()
    except IntegrityError:
        raise _idempotency_race() from None


def _idempotency_race() -> Conflict:
    """A concurrent request with the same Idempotency-Key won the race."""
    return Conflict(
        "A request with this Idempotency-Key is in progress or done; retry to get its response.",
        code="idempotency_conflict",
    )


Event3 = tuple[str | None, str, dict[str, Any]]  # email, type, data


def _events(
    queued: int, scheduled: bool, suppressed_rows: Sequence[tuple[int, str]]
) -> list[Event3]:
    """A new batch's events: QUEUED, and SUPPRESSED per address held back."""
    events: list[Event3] = [
        (None, EventType.QUEUED, {"recipients": queued, "scheduled": scheduled})
    ]
    events.extend(
        (email, EventType.SUPPRESSED, {"reason": "on suppression list", "seq": seq})
        for seq, email in suppressed_rows
    )
    return events


def _event_rows(batch_id: str, events: Sequence[Event3], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "batch_id": batch_id,
            "recipient_id": None,
            "email": email,
            "type": kind,
            "data": data,
            "created_at": now,
        }
        for email, kind, data in events
    ]


def _finish(
    batch: Batch,
    send_at: datetime | None,
    now: datetime,
    total: int,
    suppressed: int,
    duplicates: int,
) -> None:
    """The batch's stored response (Idempotency-Key replays answer with it), and COMPLETED
    at once when nothing is left to send."""
    queued = total - suppressed
    if queued == 0:
        batch.status = BatchStatus.COMPLETED
        batch.completed_at = now
    batch.response = {
        "id": batch.id,
        "status": batch.status,
        "createdAt": iso_utc(now),
        "sendAt": iso_utc(send_at) if send_at else None,
        "recipients": total,
        "queued": queued,
        "suppressed": suppressed,
        "duplicates": duplicates,
    }


async def get_batch(session: AsyncSession, batch_id: str) -> Batch:
    batch = await repository.get(session, batch_id)
    if batch is None:
        raise NotFound(f"Batch {batch_id!r} does not exist.")
    return batch


_REACHED = (
    RecipientStatus.SENT,
    RecipientStatus.DELIVERED,
    RecipientStatus.BOUNCED,
    RecipientStatus.COMPLAINED,
)


def _counts_from_counters(batch: repository.BatchView, in_flight: dict[str, int]) -> dict[str, int]:
    """Recipients per status (every status, UPPERCASE as `status` shows them) from the
    batch's counters. `in_flight` holds the SENDING and RETRYING counts; PENDING is what
    remains unfinished. The counters of DELIVERED/BOUNCED/COMPLAINED hold current states,
    `sent_count` every recipient ever sent."""
    unfinished = batch.total_recipients - (
        batch.sent_count + batch.failed_count + batch.suppressed_count + batch.cancelled_count
    )
    sending = in_flight.get(RecipientStatus.SENDING, 0)
    retrying = in_flight.get(RecipientStatus.RETRYING, 0)
    after_send = batch.delivered_count + batch.bounced_count + batch.complained_count
    return {
        RecipientStatus.PENDING: max(0, unfinished - sending - retrying),
        RecipientStatus.SENDING: sending,
        RecipientStatus.RETRYING: retrying,
        RecipientStatus.SENT: max(0, batch.sent_count - after_send),
        RecipientStatus.DELIVERED: batch.delivered_count,
        RecipientStatus.BOUNCED: batch.bounced_count,
        RecipientStatus.COMPLAINED: batch.complained_count,
        RecipientStatus.FAILED: batch.failed_count,
        RecipientStatus.SUPPRESSED: batch.suppressed_count,
        RecipientStatus.CANCELLED: batch.cancelled_count,
    }


def _has_unfinished(batch: repository.BatchView) -> bool:
    done = batch.sent_count + batch.failed_count + batch.suppressed_count + batch.cancelled_count
    return batch.total_recipients > done


async def status_counts(
    session: AsyncSession, batches: Sequence[repository.BatchView]
) -> dict[str, Any]:
    """Batch id -> recipients per status. Finished batches cost no query; the in-flight
    split of unfinished ones is one grouped query for them all."""
    active = [b.id for b in batches if b.status != BatchStatus.SCHEDULED and _has_unfinished(b)]
    in_flight = await repository.in_flight_counts(session, active) if active else {}
    return {b.id: _counts_from_counters(b, in_flight.get(b.id, {})) for b in batches}


def batch_result(status: str, counts: dict[str, int]) -> BatchResult | None:
    """How a finished batch went, beside its status (COMPLETED says only that every
    recipient reached a final state): `all_sent` (nothing failed), `partial` (some sent,
    some failed), `all_failed` (none sent, some failed), `none_sent` (every recipient
    suppressed or cancelled). None while the batch is scheduled or sending."""
    if status not in FINAL_BATCH_STATUSES:
        return None
    reached = sum(counts[s] for s in _REACHED)
    failed = counts[RecipientStatus.FAILED]
    if failed:
        return "partial" if reached else "all_failed"
    return "all_sent" if reached else "none_sent"


async def list_batches(
    session: AsyncSession, *, limit: int, offset: int, status: str | None
) -> tuple[Sequence[Batch], int]:
    return await repository.list_batches(session, limit=limit, offset=offset, status=status)


async def list_events(
    reads: Reads,
    batch_id: str,
    *,
    limit: int,
    offset: int,
    type_: str | None,
    email: str | None = None,
) -> tuple[Sequence[Any], int]:
    address = None
    if email is not None:
        try:
            address = normalize_email(email)
        except InvalidAddress as exc:
            raise ValidationFailed(
                "Invalid query parameter 'email'.",
                details=[{"field": "query:email", "message": f"invalid address: {exc}"}],
            ) from None
    found = await repository.events_of_batch(
        reads, batch_id, limit=limit, offset=offset, type_=type_, email=address
    )
    if found is None:
        raise NotFound(f"Batch {batch_id!r} does not exist.")
    return found


async def batch_with_counts(
    reads: Reads, batch_id: str
) -> tuple[repository.BatchView, dict[str, int]]:
    """A batch and its recipients per status (GET /batches/:id)."""
    found = await repository.get_with_in_flight(reads, batch_id)
    if found is None:
        raise NotFound(f"Batch {batch_id!r} does not exist.")
    batch, in_flight = found
    if in_flight is None:
        session = await reads.session()
        counts: dict[str, int] = (await status_counts(session, [batch]))[batch.id]
        return batch, counts
    return batch, _counts_from_counters(batch, in_flight)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


# Transports that report deliveries (SES Delivery notifications); SMTP relays and the
# outbox do not, so a delivery rate there would read 0 for mail that most likely arrived.
DELIVERY_REPORTING_TRANSPORTS = frozenset({"ses"})


async def summary(session: AsyncSession, batch_id: str, *, transport: str) -> dict[str, Any]:
    batch = await get_batch(session, batch_id)
    # Counted from the recipients themselves here (GET /batches/:id reads the counters).
    counts = {s.value: 0 for s in RecipientStatus}
    counts.update(await repository.status_counts(session, batch_id))
    reached = sum(counts[s] for s in _REACHED)
    first, last = await repository.sent_window(session, batch_id)
    delivered = counts[RecipientStatus.DELIVERED]
    delivery_rate = _rate(delivered, reached)
    note = None
    if not delivered and transport not in DELIVERY_REPORTING_TRANSPORTS:
        delivery_rate = None
        note = f"the {transport} transport reports no deliveries (only ses does)"
    return {
        "id": batch.id,
        "status": batch.status,
        "result": batch_result(batch.status, counts),
        "total": batch.total_recipients,
        "duplicates": batch.duplicate_count,
        "counts": counts,
        "delivery_rate": delivery_rate,
        "delivery_rate_note": note,
        "bounce_rate": _rate(counts[RecipientStatus.BOUNCED], reached),
        "complaint_rate": _rate(counts[RecipientStatus.COMPLAINED], reached),
        "first_sent_at": first,
        "last_sent_at": last,
        "created_at": batch.created_at,
        "completed_at": batch.completed_at,
    }


async def cancel_batch(session: AsyncSession, batch_id: str) -> Batch:
    batch = await repository.get(session, batch_id, for_update=True)
    if batch is None:
        raise NotFound(f"Batch {batch_id!r} does not exist.")
    if batch.status in FINAL_BATCH_STATUSES:
        raise Conflict(f"Batch {batch_id!r} is already {batch.status}.", code="batch_finished")
    cancelled = await repository.cancel_unsent(session, batch_id)
    now = utcnow()
    await record_events(
        session,
        [
            {
                "batch_id": batch_id,
                "recipient_id": rid,
                "email": email,
                "type": EventType.CANCELLED,
                "data": {},
                "created_at": now,
            }
            for rid, email in cancelled
        ],
    )
    batch.cancelled_count += len(cancelled)
    batch.status = BatchStatus.CANCELLED
    batch.completed_at = now
    await session.flush()
    await outbox.add_event(
        session,
        catalog.BATCH_CANCELLED,
        {"batchId": batch_id, "cancelled": len(cancelled)},
        batch_id=batch_id,
        at=now,
    )
    # Claimed recipients not yet handed to the provider end CANCELLED too: every worker
    # learns of this at commit and holds them back (delivery/withdrawals.py).
    await announce_cancelled(session, batch_id)
    return batch
