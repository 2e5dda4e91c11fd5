"""Queries on batches, recipients and events for the batches API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Protocol

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.batches.ingest import RecipientChecker, gc_paused
from mailer.db import pg
from mailer.db.dialect import postgresql_variant, supports_copy
from mailer.db.pg import COPY_MIN_ROWS
from mailer.db.reads import Reads
from mailer.events import bump_metrics, event_views, minute_bucket, record_events
from mailer.models import Batch, Event, Recipient, Suppression
from mailer.models.base import utcnow
from mailer.models.enums import CLAIMABLE_STATUSES, MetricKind, RecipientStatus
from mailer.suppressions import repository as suppressions
from mailer.templates import repository as templates
from mailer.templates.versions import VersionContent, version_row
from mailer.webhook_endpoints import outbox


@dataclass(slots=True)
class BatchContext:
    """What a new batch is checked against: its template's id and current version, and
    which of the probed addresses are suppressed."""

    template_id: str
    version: VersionContent
    suppressed: set[str]


async def _batch_context_pg(
    session: AsyncSession, template_id: str, emails: Sequence[str]
) -> BatchContext | None:
    row = await pg.batch_context(session, template_id, list(emails))
    if row is None:
        return None
    return BatchContext(row["template_id"], version_row(row), set(row["suppressed"]))


@postgresql_variant(_batch_context_pg)
async def batch_context(
    session: AsyncSession, template_id: str, emails: Sequence[str]
) -> BatchContext | None:
    """A live template with its current version, and which of `emails` (normal forms) are
    on the suppression list; None if there is no such template. On PostgreSQL one round
    trip for both (issue 18: a single-recipient POST went from five round trips to two;
    tests/batches/test_round_trips.py counts them, docs/performance.md has the CPU)."""
    found = await templates.get_live_with_version(session, template_id)
    if found is None:
        return None
    suppressed = await suppressions.existing_among(session, emails) if emails else set()
    return BatchContext(found[0].id, found[1], suppressed)


def _recipients_copied(
    session: AsyncSession,
    batch_id: str,
    rows: Sequence[tuple[str, dict[str, Any]]],
    suppressed: AbstractSet[str] = frozenset(),
) -> bool:
    return len(rows) >= COPY_MIN_ROWS  # a COPY is two round trips, an INSERT one


async def _copy_recipients(
    session: AsyncSession,
    batch_id: str,
    rows: Sequence[tuple[str, dict[str, Any]]],
    suppressed: AbstractSet[str] = frozenset(),
) -> None:
    now = utcnow()
    pending, held = str(RecipientStatus.PENDING), str(RecipientStatus.SUPPRESSED)
    dumps = orjson.dumps
    with gc_paused():
        records = [
            (
                batch_id,
                seq,
                email,
                dumps(variables).decode(),
                held if email in suppressed else pending,
                0,
                now,
            )
            for seq, (email, variables) in enumerate(rows)
        ]
    await pg.copy_records(session, "recipients", pg.RECIPIENT_COLUMNS, records)


@postgresql_variant(_copy_recipients, when=_recipients_copied)
async def insert_recipients(
    session: AsyncSession,
    batch_id: str,
    rows: Sequence[tuple[str, dict[str, Any]]],
    suppressed: AbstractSet[str] = frozenset(),
) -> None:
    """Bulk insert (email, variables) rows with seq = position, status SUPPRESSED for the
    emails in `suppressed` and PENDING for the others. COPY on PostgreSQL, but for a few
    rows."""
    now = utcnow()
    pending, held = str(RecipientStatus.PENDING), str(RecipientStatus.SUPPRESSED)
    await session.execute(
        insert(Recipient),
        [
            {
                "batch_id": batch_id,
                "seq": seq,
                "email": email,
                "variables": variables,
                "status": held if email in suppressed else pending,
                "attempts": 0,
                "updated_at": now,
            }
            for seq, (email, variables) in enumerate(rows)
        ],
    )


class DuplicateBatch(Exception):
    """The batch's Idempotency-Key is taken (a concurrent request won the race)."""


_ATTRIBUTES = {c.name: attr.key for attr in Batch.__mapper__.column_attrs for c in attr.columns}

NewEvent = tuple[str | None, str, dict[str, Any]]  # email, type, data


async def insert_batch_pg(
    session: AsyncSession,
    batch: Batch,
    rows: Sequence[tuple[str, dict[str, Any]]],
    suppressed: AbstractSet[str],
    events: Sequence[NewEvent],
    suppressed_count: int = 0,
    *,
    emails_of: tuple[list[int], Any, Any] | None = None,
) -> None:
    """`insert_batch` on PostgreSQL, one statement (pg.insert_batch), then the outbound
    webhooks' rows if an endpoint is enabled. POST /emails passes `emails_of`: the
    recipients' ids and the inline template's and version's objects (or None twice)."""
    dumps = orjson.dumps
    pending, held = str(RecipientStatus.PENDING), str(RecipientStatus.SUPPRESSED)
    ids_and_rows = None
    if emails_of is not None:
        ids, template, version = emails_of
        ids_and_rows = (
            ids,
            None if template is None else pg.model_values(template),
            None if version is None else pg.model_values(version),
        )
    try:
        await pg.insert_batch(
            session,
            pg.model_values(batch),
            batch.id,
            batch.created_at,
            [email for email, _ in rows],
            [dumps(variables).decode() for _, variables in rows],
            [held if email in suppressed else pending for email, _ in rows],
            [email for email, _, _ in events],
            [str(kind) for _, kind, _ in events],
            [dumps(data).decode() for _, _, data in events],
            (minute_bucket(batch.created_at), str(MetricKind.SUPPRESSED), suppressed_count),
            emails_of=ids_and_rows,
        )
    except pg.UniqueViolation as exc:
        raise DuplicateBatch from exc
    await outbox.add_from_events(  # outbound webhooks, same transaction
        session,
        (
            {
                "batch_id": batch.id,
                "recipient_id": None,
                "email": email,
                "type": kind,
                "data": data,
                "created_at": batch.created_at,
            }
            for email, kind, data in events
        ),
    )


async def _insert_batch_pg(
    session: AsyncSession,
    batch: Batch,
    rows: Sequence[tuple[str, dict[str, Any]]],
    suppressed: AbstractSet[str],
    events: Sequence[NewEvent],
    suppressed_count: int = 0,
) -> None:
    await insert_batch_pg(session, batch, rows, suppressed, events, suppressed_count)


@postgresql_variant(_insert_batch_pg)
async def insert_batch(
    session: AsyncSession,
    batch: Batch,
    rows: Sequence[tuple[str, dict[str, Any]]],
    suppressed: AbstractSet[str],
    events: Sequence[NewEvent],
    suppressed_count: int = 0,
) -> None:
    """A new batch (a transient Batch with its created_at set), its recipients, its events
    (email, type, data; created at the batch's creation) and `suppressed_count` added to
    the suppressed metric. On PostgreSQL one statement on the session's connection: one
    round trip where the ORM's flush, two inserts and an upsert take four, and atomic by
    itself (no BEGIN/COMMIT needed). Raises DuplicateBatch if the Idempotency-Key is taken."""
    session.add(batch)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise DuplicateBatch from exc
    await insert_recipients(session, batch.id, rows, suppressed)
    await record_events(
        session,
        [
            {
                "batch_id": batch.id,
                "recipient_id": None,
                "email": email,
                "type": kind,
                "data": data,
                "created_at": batch.created_at,
            }
            for email, kind, data in events
        ],
    )
    if suppressed_count:
        await bump_metrics(session, {MetricKind.SUPPRESSED: suppressed_count}, batch.created_at)


def can_stream_copy(session: AsyncSession) -> bool:
    """Whether copy_checked_recipients works here (PostgreSQL)."""
    return supports_copy(session)


async def copy_checked_recipients(
    session: AsyncSession,
    batch_id: str,
    raw: list[Any],
    checker: RecipientChecker,
    *,
    slice_size: int = 2000,
) -> int:
    """Check the raw recipients slice by slice and COPY each checked slice as it comes
    (PostgreSQL only, see can_stream_copy): the checks run while the server writes the rows
    and their indexes on the other core. At the first failure nothing more is copied, but
    the rest is still checked so the caller's checker.finish() reports every error (and the
    caller rolls back). All rows are PENDING; `mark_suppressed` follows. Returns the number
    of rows copied."""
    now = utcnow()
    pending = str(RecipientStatus.PENDING)
    dumps = orjson.dumps
    copied = 0
    position = 0

    async def records() -> AsyncIterator[tuple[Any, ...]]:
        nonlocal copied, position
        while position < len(raw):
            part = raw[position : position + slice_size]
            position += len(part)
            rows = checker.feed(part)
            if checker.error_count:
                return
            with gc_paused():
                ready = [
                    (batch_id, copied + i, email, dumps(variables).decode(), pending, 0, now)
                    for i, (email, variables) in enumerate(rows)
                ]
            copied += len(ready)
            for record in ready:
                yield record

    await pg.copy_records(session, "recipients", pg.RECIPIENT_COLUMNS, records())
    if position < len(raw):
        checker.feed(raw[position:])
    return copied


async def mark_suppressed(session: AsyncSession, batch_id: str) -> list[tuple[int, str]]:
    """The batch's PENDING recipients whose address is on the suppression list → SUPPRESSED
    (one join on the server); their (seq, email), by seq."""
    result = await session.execute(
        update(Recipient)
        .where(
            Recipient.batch_id == batch_id,
            Recipient.status == RecipientStatus.PENDING,
            Recipient.email == Suppression.email,
        )
        .values(status=RecipientStatus.SUPPRESSED, updated_at=utcnow())
        .returning(Recipient.seq, Recipient.email)
        .execution_options(synchronize_session=False)
    )
    return sorted((int(seq), str(email)) for seq, email in result.tuples())


class KeyedBatch(Protocol):
    """What a request with an Idempotency-Key reads of the batch the key already names."""

    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def request_hash(self) -> str | None: ...

    @property
    def response(self) -> dict[str, Any] | None: ...


async def _find_by_idempotency_key_pg(
    session: AsyncSession, api_key_id: str, key: str
) -> KeyedBatch | None:
    row = await pg.keyed_batch(session, api_key_id, key)
    if row is None:
        return None
    response = None if row["response"] is None else orjson.loads(row["response"])
    return SimpleNamespace(  # a plain row: the ORM object is not needed
        id=row["id"],
        created_at=row["created_at"],
        request_hash=row["request_hash"],
        response=response,
    )


@postgresql_variant(_find_by_idempotency_key_pg)
async def find_by_idempotency_key(
    session: AsyncSession, api_key_id: str, key: str
) -> KeyedBatch | None:
    """The batch this key of this API key already names, if any. On PostgreSQL a
    hand-written statement, so that a small POST's reads all run on its pooled connection
    (`pg.single_statement_unit`)."""
    result = await session.scalars(
        select(Batch).where(Batch.api_key_id == api_key_id, Batch.idempotency_key == key)
    )
    return result.first()


async def get(session: AsyncSession, batch_id: str, *, for_update: bool = False) -> Batch | None:
    if for_update:
        result = await session.scalars(select(Batch).where(Batch.id == batch_id).with_for_update())
        return result.first()
    return await session.get(Batch, batch_id)


async def list_batches(
    session: AsyncSession, *, limit: int, offset: int, status: str | None
) -> tuple[Sequence[Batch], int]:
    query = select(Batch)
    count = select(func.count()).select_from(Batch)
    if status:
        query = query.where(Batch.status == status)
        count = count.where(Batch.status == status)
    total = await session.scalar(count)
    rows = await session.scalars(
        query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit).offset(offset)
    )
    return rows.all(), int(total or 0)


class BatchView(Protocol):
    """What reading a batch uses of it: a Batch, or a row read without the ORM (building a
    transient Batch cost ~0.1 ms, a fifth of GET /batches/:id's own work; issue 18)."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def template_id(self) -> str: ...

    @property
    def template_version_id(self) -> str: ...

    @property
    def metadata_(self) -> dict[str, Any]: ...

    @property
    def tags(self) -> dict[str, str]: ...

    @property
    def from_address(self) -> str | None: ...

    @property
    def reply_to(self) -> list[str]: ...

    @property
    def unsubscribe(self) -> bool: ...

    @property
    def send_at(self) -> datetime | None: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def started_at(self) -> datetime | None: ...

    @property
    def completed_at(self) -> datetime | None: ...

    @property
    def total_recipients(self) -> int: ...

    @property
    def duplicate_count(self) -> int: ...

    @property
    def sent_count(self) -> int: ...

    @property
    def failed_count(self) -> int: ...

    @property
    def suppressed_count(self) -> int: ...

    @property
    def cancelled_count(self) -> int: ...

    @property
    def delivered_count(self) -> int: ...

    @property
    def bounced_count(self) -> int: ...

    @property
    def complained_count(self) -> int: ...


# (attribute, is JSON) of each column, in pg.BATCH_VIEW_SQL's order.
_VIEW_FIELDS = tuple(
    (_ATTRIBUTES[name], name in pg.BATCH_JSON_COLUMNS) for name in pg.BATCH_COLUMNS
)


def _batch_from_row(row: Any) -> BatchView:
    """A row of pg.BATCH_VIEW_SQL as a BatchView (JSON columns come as text). Read by
    position: by name, the record lookups cost ~10 % of a GET /batches/:id."""
    values = {}
    for i, (attribute, is_json) in enumerate(_VIEW_FIELDS):
        value = row[i]
        values[attribute] = orjson.loads(value) if is_json and value is not None else value
    view: BatchView = SimpleNamespace(**values)
    return view


async def get_with_in_flight(
    reads: Reads, batch_id: str
) -> tuple[BatchView, dict[str, int] | None] | None:
    """A batch and its SENDING/RETRYING counts (zeros when it has nothing unfinished; None
    when not read here: the caller asks status_counts). On PostgreSQL one statement on the
    pooled connection, without the ORM or a session: through them GET /batches/:id cost
    ~2.3 ms of API CPU against 0.5 ms for a bare endpoint doing the same query (bench/api,
    issue 18)."""
    if reads.driver is None:
        batch = await get(await reads.session(), batch_id)
        return None if batch is None else (batch, None)
    row = await pg.batch_view(reads.driver, batch_id)
    if row is None:
        return None
    in_flight: dict[str, int] = {
        RecipientStatus.SENDING: int(row["sending"] or 0),
        RecipientStatus.RETRYING: int(row["retrying"] or 0),
    }
    return _batch_from_row(row), in_flight


async def events_of_batch(
    reads: Reads,
    batch_id: str,
    *,
    limit: int,
    offset: int,
    type_: str | None,
    email: str | None = None,
) -> tuple[Sequence[Any], int] | None:
    """A page of a batch's events (Events, or rows with their attributes) and their total;
    None if the batch does not exist. On PostgreSQL one statement on the pooled connection
    (three queries in a session otherwise: the batch, the count, the page; bench/api
    measured the endpoint at 3.3 ms of API CPU against 0.7 ms for the bare reference doing
    those three with raw asyncpg)."""
    if reads.driver is None:
        session = await reads.session()
        if await get(session, batch_id) is None:
            return None
        return await list_events(
            session, batch_id, limit=limit, offset=offset, type_=type_, email=email
        )
    rows = await pg.events_page(reads.driver, batch_id, type_, email, limit, offset)
    if not rows or not rows[0]["found"]:
        return None
    events = event_views(rows)
    return events, int(rows[0]["total"])


async def list_events(
    session: AsyncSession,
    batch_id: str,
    *,
    limit: int,
    offset: int,
    type_: str | None,
    email: str | None = None,
) -> tuple[Sequence[Event], int]:
    where = [Event.batch_id == batch_id]
    if type_:
        where.append(Event.type == type_)
    if email is not None:
        where.append(Event.email == email)
    total = await session.scalar(select(func.count()).select_from(Event).where(*where))
    rows = await session.scalars(
        select(Event).where(*where).order_by(Event.id).limit(limit).offset(offset)
    )
    return rows.all(), int(total or 0)


async def status_counts(session: AsyncSession, batch_id: str) -> dict[str, int]:
    rows = await session.execute(
        select(Recipient.status, func.count())
        .where(Recipient.batch_id == batch_id)
        .group_by(Recipient.status)
    )
    return {status: int(n) for status, n in rows.tuples()}


async def in_flight_counts(
    session: AsyncSession, batch_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Batch id -> {SENDING: n, RETRYING: n} for unfinished batches (the counters cannot
    tell those from PENDING)."""
    rows = await session.execute(
        select(Recipient.batch_id, Recipient.status, func.count())
        .where(
            Recipient.batch_id.in_(batch_ids),
            Recipient.status.in_([RecipientStatus.SENDING.value, RecipientStatus.RETRYING.value]),
        )
        .group_by(Recipient.batch_id, Recipient.status)
    )
    out: dict[str, dict[str, int]] = {}
    for batch_id, status, n in rows.tuples():
        out.setdefault(batch_id, {})[status] = int(n)
    return out


async def sent_window(
    session: AsyncSession, batch_id: str
) -> tuple[datetime | None, datetime | None]:
    row = await session.execute(
        select(func.min(Recipient.sent_at), func.max(Recipient.sent_at)).where(
            Recipient.batch_id == batch_id
        )
    )
    first, last = row.one()
    return first, last


async def cancel_unsent(session: AsyncSession, batch_id: str) -> list[tuple[int, str]]:
    """PENDING/RETRYING recipients → CANCELLED. Claimed (SENDING) ones are left to their
    worker: CANCELLED too unless their send had already begun."""
    result = await session.execute(
        update(Recipient)
        .where(Recipient.batch_id == batch_id, Recipient.status.in_(CLAIMABLE_STATUSES))
        .values(status=RecipientStatus.CANCELLED, updated_at=utcnow())
        .returning(Recipient.id, Recipient.email)
    )
    return [(int(i), str(e)) for i, e in result.tuples()]


async def expire_idempotency_key(session: AsyncSession, batch_id: str) -> None:
    await session.execute(update(Batch).where(Batch.id == batch_id).values(idempotency_key=None))


IDEMPOTENCY_WINDOW = timedelta(hours=24)
