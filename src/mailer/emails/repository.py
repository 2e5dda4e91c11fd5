"""Queries for /emails: attachments, a new email's message ids, message lookup."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import String, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.batches import repository as batches
from mailer.batches.repository import NewEvent
from mailer.db import pg
from mailer.db.dialect import has_pair, postgresql_variant
from mailer.db.reads import Reads
from mailer.events import event_views
from mailer.models import Attachment, Batch, Event, Recipient, Template, TemplateVersion
from mailer.suppressions import repository as suppressions
from mailer.templates import repository as templates
from mailer.templates.versions import VersionContent, version_row
from mailer.transports.base import MailAttachment


@dataclass(slots=True)
class EmailContext:
    """What new emails are checked against: the template's current version (None without
    `template_id`, or when it names no live template), which addresses are suppressed, and
    on PostgreSQL the ids their messages will have (None elsewhere: read after the insert)."""

    version: VersionContent | None
    suppressed: set[str]
    ids: list[int] | None


async def _email_context_pg(
    session: AsyncSession,
    template_id: str | None,
    emails: Sequence[str],
    ignored_reasons: Sequence[str],
) -> EmailContext:
    row = await pg.email_context(session, template_id, list(emails), list(ignored_reasons))
    version = None if row["id"] is None else version_row(row)
    return EmailContext(version, set(row["suppressed"]), list(row["ids"]))


@postgresql_variant(_email_context_pg)
async def email_context(
    session: AsyncSession,
    template_id: str | None,
    emails: Sequence[str],
    ignored_reasons: Sequence[str],
) -> EmailContext:
    """The context of new emails to `emails` (normal forms), suppressions for
    `ignored_reasons` not counting. On PostgreSQL one round trip, which also takes the
    messages' ids, so that POST /emails stores its answer with its one insert (issue 18:
    three round trips at most; tests/batches/test_round_trips.py)."""
    version = None
    if template_id is not None:
        found = await templates.get_live_with_version(session, template_id)
        version = None if found is None else found[1]
    held = await suppressions.existing_among(session, emails, ignored_reasons=ignored_reasons)
    return EmailContext(version, held, None)


async def _insert_emails_pg(
    session: AsyncSession,
    batch: Batch,
    rows: Sequence[tuple[str, dict[str, Any]]],
    held: AbstractSet[str],
    events: Sequence[NewEvent],
    inline: tuple[Template, TemplateVersion] | None,
    ids: list[int] | None,
) -> list[int]:
    assert ids is not None, "email_context takes the ids on PostgreSQL"
    template, version = inline or (None, None)
    await batches.insert_batch_pg(
        session, batch, rows, held, events, len(held), emails_of=(ids, template, version)
    )
    return ids


@postgresql_variant(_insert_emails_pg)
async def insert_emails(
    session: AsyncSession,
    batch: Batch,
    rows: Sequence[tuple[str, dict[str, Any]]],
    held: AbstractSet[str],
    events: Sequence[NewEvent],
    inline: tuple[Template, TemplateVersion] | None,
    ids: list[int] | None,
) -> list[int]:
    """New emails: the inline template and version of inline content, the batch,
    its recipients (seq in `rows` order; those in `held` SUPPRESSED), its events and the
    suppressed count. Returns the messages' ids in `rows` order. On PostgreSQL one
    statement, with the ids `email_context` took; elsewhere they are read afterwards.
    Raises batches' DuplicateBatch (the Idempotency-Key is taken)."""
    if inline is not None:
        session.add_all(inline)
        await session.flush()
    await batches.insert_batch(session, batch, rows, held, events, len(held))
    found = await recipient_ids(session, batch.id)
    return [found[seq] for seq in range(len(rows))]


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


# What a message shows of its recipient, batch, version and template (MESSAGE_VIEW_SQL's
# names).
MESSAGE_FIELDS = (
    "id",
    "status",
    "email",
    "provider_message_id",
    "attempts",
    "last_error",
    "sent_at",
    "updated_at",
    "batch_id",
    "from_address",
    "tags",
    "created_at",
    "template_id",
    "inline",
    "subject",
    "version",
)


def message_fields(row: MessageRow) -> dict[str, Any]:
    """A message's MESSAGE_FIELDS from its ORM row."""
    recipient, batch, version, template = row
    return {
        "id": recipient.id,
        "status": recipient.status,
        "email": recipient.email,
        "provider_message_id": recipient.provider_message_id,
        "attempts": recipient.attempts,
        "last_error": recipient.last_error,
        "sent_at": recipient.sent_at,
        "updated_at": recipient.updated_at,
        "batch_id": batch.id,
        "from_address": batch.from_address,
        "tags": batch.tags,
        "created_at": batch.created_at,
        "template_id": template.id,
        "inline": template.inline,
        "subject": version.subject,
        "version": version.version,
    }


@dataclass(frozen=True, slots=True)
class MessageView:
    fields: dict[str, Any]  # MESSAGE_FIELDS
    events: list[Any]  # Events, or rows with their attributes


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


async def message_with_events(reads: Reads, message_id: int) -> MessageView | None:
    """One message and its events, oldest first; None if there is no such message. On
    PostgreSQL one statement on the pooled connection, without the ORM or a session
    (`mailer.db.reads`; bench/api measured GET /emails/:id before and after, issue 18)."""
    if reads.driver is None:
        session = await reads.session()
        row = await get_message(session, message_id)
        if row is None:
            return None
        return MessageView(message_fields(row), await message_events(session, [message_id]))
    rows = await pg.message_view(reads.driver, message_id)
    if not rows:
        return None
    first = rows[0]
    fields = {name: first[name] for name in MESSAGE_FIELDS}
    fields["tags"] = orjson.loads(first["tags"])
    events = event_views(rows, prefix="event_")
    return MessageView(fields, events)


async def message_events(session: AsyncSession, message_ids: Sequence[int]) -> list[Event]:
    """The events of these messages (by the recipient_id index), oldest first."""
    if not message_ids:
        return []
    rows = await session.scalars(
        select(Event).where(Event.recipient_id.in_(list(message_ids))).order_by(Event.id)
    )
    return list(rows.all())


# Up to this many batches match a filter on batches (batch_id, tag, since): their newest
# rows are read batch by batch. More: the primary key is walked newest first, where rows of
# that many batches are dense enough to fill a page soon.
BATCH_WALK_LIMIT = 500
NO_CURSOR = 2**63 - 1


async def matching_batches(
    session: AsyncSession,
    *,
    batch_id: str | None,
    tag: tuple[str, str] | None,
    since: datetime | None,
    limit: int,
) -> list[str]:
    """Ids of up to `limit` batches that pass the batch filters (the primary key, the GIN
    index of tags on PostgreSQL, the created_at index)."""
    stmt = select(Batch.id)
    if batch_id is not None:
        stmt = stmt.where(Batch.id == batch_id)
    if tag is not None:
        stmt = stmt.where(has_pair(session, Batch.tags, *tag))
    if since is not None:
        stmt = stmt.where(Batch.created_at >= since)
    return list((await session.scalars(stmt.limit(limit))).all())


async def _newest_in_batches_pg(
    session: AsyncSession,
    batch_ids: list[str],
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[int]:
    cursor = None
    if before_id is not None:
        cursor = (
            await session.execute(
                select(Recipient.batch_id, Recipient.seq).where(Recipient.id == before_id)
            )
        ).first()
    return await pg.newest_in_batches(
        session,
        batch_ids,
        NO_CURSOR if before_id is None else before_id,
        "" if cursor is None else cursor[0],
        0 if cursor is None else cursor[1],
        status,
        limit,
    )


@postgresql_variant(_newest_in_batches_pg)
async def newest_in_batches(
    session: AsyncSession,
    batch_ids: list[str],
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[int]:
    """Ids of the newest `limit` recipients of these batches below `before_id`, in
    `status` if given; newest first."""
    stmt = select(Recipient.id).where(Recipient.batch_id.in_(batch_ids))
    if status is not None:
        stmt = stmt.where(Recipient.status == status)
    if before_id is not None:
        stmt = stmt.where(Recipient.id < before_id)
    rows = await session.scalars(stmt.order_by(Recipient.id.desc()).limit(limit))
    return [int(i) for i in rows.all()]


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
    """Messages, newest first (by id), below `before_id` (the cursor).

    `to` uses the address index. Otherwise a filter on batches (batch_id, tag, since) finds
    its batches first and, if they are few, reads the newest rows of each. Else the
    primary key is walked newest first, with a rare status (ix_recipients_rare_status_id)
    as the planner's other way in. The status is a literal in the statement: a partial
    index serves only a query whose plan knows the value."""
    if to is None and (batch_id is not None or tag is not None or since is not None):
        batches = await matching_batches(
            session, batch_id=batch_id, tag=tag, since=since, limit=BATCH_WALK_LIMIT + 1
        )
        if not batches:
            return []
        if len(batches) <= BATCH_WALK_LIMIT:
            ids = await newest_in_batches(session, batches, status, before_id, limit)
            if not ids:
                return []
            found = await session.execute(
                _message_select().where(Recipient.id.in_(ids)).order_by(Recipient.id.desc())
            )
            return [(r[0], r[1], r[2], r[3]) for r in found.all()]
    stmt = _message_select()
    if to is not None:
        stmt = stmt.where(Recipient.email == to)
    if batch_id is not None:
        stmt = stmt.where(Recipient.batch_id == batch_id)
    if status is not None:
        stmt = stmt.where(Recipient.status == literal(status, String(), literal_execute=True))
    if tag is not None:
        stmt = stmt.where(Batch.tags[tag[0]].as_string() == tag[1])
    if since is not None:
        stmt = stmt.where(Batch.created_at >= since)
    if before_id is not None:
        stmt = stmt.where(Recipient.id < before_id)
    rows = await session.execute(stmt.order_by(Recipient.id.desc()).limit(limit))
    return [(r[0], r[1], r[2], r[3]) for r in rows.all()]
