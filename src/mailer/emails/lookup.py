"""Reading messages: GET /emails/:id and GET /emails. Every recipient of every batch is a
message; its id is the recipient's id (a number, as a string)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.addresses import InvalidAddress, normalize_email
from mailer.db.reads import Reads
from mailer.emails import repository
from mailer.errors import NotFound, ValidationFailed
from mailer.models import Event
from mailer.models.enums import EventType, RecipientStatus

MAX_PAGE = 100


def _message_id(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def _delivered_at(events: Sequence[Any]) -> datetime | None:
    return next((e.created_at for e in events if e.type == EventType.DELIVERY), None)


def _out(fields: dict[str, Any], events: Sequence[Any], mail_from: str) -> dict[str, Any]:
    """A message as the API shows it, from its repository.MESSAGE_FIELDS."""
    inline = fields["inline"]
    return {
        "id": str(fields["id"]),
        "status": fields["status"],
        "from_": fields["from_address"] or mail_from,
        "to": fields["email"],
        "subject": fields["subject"],
        "batch_id": fields["batch_id"],
        "template_id": None if inline else fields["template_id"],
        "template_version": None if inline else fields["version"],
        "provider_message_id": fields["provider_message_id"],
        "attempts": fields["attempts"],
        "last_error": fields["last_error"],
        "tags": fields["tags"],
        "created_at": fields["created_at"],
        "sent_at": fields["sent_at"],
        "delivered_at": _delivered_at(events),
        "updated_at": fields["updated_at"],
    }


async def get_message(reads: Reads, message_id: str, *, mail_from: str) -> dict[str, Any]:
    number = _message_id(message_id)
    found = await repository.message_with_events(reads, number) if number is not None else None
    if found is None:
        raise NotFound(f"Email {message_id!r} does not exist.")
    out = _out(found.fields, found.events, mail_from)
    out["events"] = found.events
    return out


def _query_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"Invalid query parameter {field!r}.",
        details=[{"field": f"query:{field}", "message": message}],
    )


async def find_messages(
    session: AsyncSession,
    *,
    to: str | None,
    status: str | None,
    batch_id: str | None,
    tag: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
    mail_from: str,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of messages, newest first, and the cursor of the next page (None: last)."""
    address = None
    if to is not None:
        try:
            address = normalize_email(to)
        except InvalidAddress as exc:
            raise _query_error("to", f"invalid address: {exc}") from None
    if status is not None and status not in RecipientStatus.__members__:
        raise _query_error("status", "one of " + ", ".join(RecipientStatus))
    tag_pair = None
    if tag is not None:
        name, sep, value = tag.partition(":")
        if not sep or not name or not value:
            raise _query_error("tag", "name:value")
        tag_pair = (name, value)
    before = None
    if cursor is not None:
        before = _message_id(cursor)
        if before is None:
            raise _query_error("cursor", "the nextCursor of a previous page")
    if since is not None and since.tzinfo is None:
        raise _query_error("since", "must include a timezone")
    rows = await repository.find_messages(
        session,
        to=address,
        status=status,
        batch_id=batch_id,
        tag=tag_pair,
        since=since,
        before_id=before,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    events = await repository.message_events(session, [r[0].id for r in rows])
    delivered: dict[int, list[Event]] = {}
    for event in events:
        if event.type == EventType.DELIVERY and event.recipient_id is not None:
            delivered.setdefault(event.recipient_id, []).append(event)
    page = [_out(repository.message_fields(r), delivered.get(r[0].id, []), mail_from) for r in rows]
    return page, (str(rows[-1][0].id) if more and rows else None)
