"""Batch request/response shapes. The recipients array is validated by batches.ingest (fast
path, indexed errors); BatchCreate documents it and validates everything else."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from mailer.models.base import iso_utc
from mailer.models.enums import EventType, RecipientStatus
from mailer.schemas import RequestModel, ResponseModel

_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# Tags mailer sets itself (mailer_batch, mailer_recipient); users' tags may not use it.
RESERVED_TAG_PREFIX = "mailer_"
MAX_SCHEDULE_AHEAD = timedelta(days=365)
_SEND_AT_EXAMPLE = "e.g. 2026-01-01T09:00:00Z"


def check_tags(value: dict[str, str]) -> dict[str, str]:
    for name, tag in value.items():
        if not _TAG.match(name) or not _TAG.match(tag):
            raise ValueError(f"tag {name!r}: names and values must be 1-256 of [A-Za-z0-9_-]")
        if name.lower().startswith(RESERVED_TAG_PREFIX):
            raise ValueError(
                f"tag {name!r}: names starting with {RESERVED_TAG_PREFIX!r} are mailer's own"
            )
    return value


def parse_send_at(value: Any) -> Any:
    # Pydantic would also take a number (or a string of digits) as a Unix time, in
    # seconds or milliseconds by its size: 99999999999 meant 1973 and sent at once.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 date-time string, {_SEND_AT_EXAMPLE}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"must be an ISO 8601 date-time, {_SEND_AT_EXAMPLE}") from None


def send_at_in_range(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"must include a timezone, {_SEND_AT_EXAMPLE}")
    now = datetime.now(UTC)
    try:
        when = value.astimezone(UTC)
    except OverflowError:
        # Year 1 or 9999 with an offset: beyond what a datetime (or the database) holds
        # once in UTC.
        when = now if value.year == 1 else datetime.max.replace(tzinfo=UTC)
    latest = now + MAX_SCHEDULE_AHEAD
    if when > latest:
        raise ValueError(
            f"must be at most {MAX_SCHEDULE_AHEAD.days} days ahead "
            f"(before {iso_utc(latest.replace(microsecond=0))})"
        )
    return max(when, now)  # a time in the past means now


class RecipientIn(RequestModel):
    email: str = Field(max_length=320, examples=["user1@example.com"])
    variables: dict[str, Any] = Field(default_factory=dict)


class BatchOptions(RequestModel):
    template_id: str = Field(min_length=1, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)
    send_at: datetime | None = Field(
        None,
        description="ISO 8601 with a timezone; schedules the batch, at most 365 days ahead "
        "(a time in the past means now)",
    )
    from_: str | None = Field(None, alias="from", max_length=400)
    reply_to: list[str] | str | None = None
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)
    unsubscribe: bool = Field(
        True,
        description="add List-Unsubscribe headers (RFC 8058); {{unsubscribe_url}} in the "
        "template needs it",
    )
    allow_missing_variables: bool = Field(
        False,
        description="for a template that declares no variables: send recipients that lack "
        "a variable the template uses (it renders empty) instead of refusing the batch",
    )
    priority: Literal["bulk", "high"] = Field(
        "bulk",
        description="high: the transactional lane (its own queue, served before bulk "
        "batches; see BULK_MIN_SHARE)",
    )

    _tags = field_validator("tags")(check_tags)
    _send_at_iso = field_validator("send_at", mode="before")(parse_send_at)
    _send_at_range = field_validator("send_at")(send_at_in_range)


class BatchCreate(BatchOptions):
    recipients: list[RecipientIn] = Field(min_length=1)


COUNTS_DESCRIPTION = (
    "recipients per status, one key per recipient status (PENDING, SENDING, RETRYING, SENT, "
    "DELIVERED, BOUNCED, COMPLAINED, FAILED, SUPPRESSED, CANCELLED), every key always present"
)
BatchResult = Literal["all_sent", "partial", "all_failed", "none_sent"]
RESULT_DESCRIPTION = (
    "how a finished batch went: all_sent (nothing failed), partial (some sent, some "
    "failed), all_failed (none sent, some failed), none_sent (every recipient suppressed or "
    "cancelled); null while scheduled or sending"
)


class BatchCreated(ResponseModel):
    id: str
    status: str
    created_at: datetime
    send_at: datetime | None = None
    recipients: int
    queued: int
    suppressed: int
    duplicates: int


class BatchOut(ResponseModel):
    id: str
    status: str
    template_id: str
    template_version_id: str
    metadata: dict[str, Any]
    tags: dict[str, str]
    from_: str | None = Field(None, alias="from")
    reply_to: list[str]
    unsubscribe: bool
    send_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    result: BatchResult | None = Field(description=RESULT_DESCRIPTION)
    total: int = Field(description="recipients after removing duplicate addresses")
    duplicates: int = Field(description="duplicate addresses in the request, sent once")
    counts: dict[str, int] = Field(description=COUNTS_DESCRIPTION)


class EventOut(ResponseModel):
    id: int
    type: str
    email: str | None
    recipient_id: int | None
    batch_id: str | None
    created_at: datetime
    data: dict[str, Any]


class BatchSummary(ResponseModel):
    id: str
    status: str
    result: BatchResult | None = Field(description=RESULT_DESCRIPTION)
    total: int
    duplicates: int
    counts: dict[str, int] = Field(description=COUNTS_DESCRIPTION)
    delivery_rate: float | None = Field(
        description="delivered / sent; null when the transport reports no deliveries "
        "(smtp, outbox: see deliveryRateNote) or nothing was sent"
    )
    delivery_rate_note: str | None = None
    bounce_rate: float | None
    complaint_rate: float | None
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    created_at: datetime
    completed_at: datetime | None


# Event type filter: the event types, and the recipient status names users see, each for
# the event that moves a recipient into that status (?type=BOUNCED gives BOUNCE events).
STATUS_EVENT_TYPES: dict[str, EventType] = {
    RecipientStatus.PENDING: EventType.QUEUED,
    RecipientStatus.RETRYING: EventType.RETRY,
    RecipientStatus.DELIVERED: EventType.DELIVERY,
    RecipientStatus.BOUNCED: EventType.BOUNCE,
    RecipientStatus.COMPLAINED: EventType.COMPLAINT,
    "UNSUBSCRIBED": EventType.UNSUBSCRIBE,
}
EVENT_TYPE_FILTERS: tuple[str, ...] = (*EventType, *STATUS_EVENT_TYPES)


def event_type_filter(value: str) -> EventType | None:
    """The event type a `?type=` value names; None if none."""
    found = STATUS_EVENT_TYPES.get(value)
    if found is not None:
        return found
    try:
        return EventType(value)
    except ValueError:
        return None
