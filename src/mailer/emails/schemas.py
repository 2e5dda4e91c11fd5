"""/emails request and response shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from mailer.batches.schemas import (
    EventOut,
    check_tags,
    parse_send_at,
    send_at_in_range,
)
from mailer.schemas import RequestModel, ResponseModel
from mailer.templates.schemas import MAX_TEMPLATE_CHARS

MAX_ADDRESSES = 50
MAX_ATTACHMENTS = 20
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # decoded, all attachments together
MAX_HEADERS = 10
# Base64 of MAX_ATTACHMENT_BYTES, with room for line breaks.
_MAX_BASE64_CHARS = MAX_ATTACHMENT_BYTES * 4 // 3 + 4096


class AttachmentIn(RequestModel):
    filename: str = Field(min_length=1, max_length=255, examples=["invoice.pdf"])
    content: str = Field(
        max_length=_MAX_BASE64_CHARS, description="the file, base64 (RFC 4648, standard alphabet)"
    )
    content_type: str = Field(
        "application/octet-stream", max_length=201, examples=["application/pdf"]
    )


class EmailCreate(RequestModel):
    """One email to one address or up to 50 (each its own message). Content: `html` and/or
    `text` (with `subject`), or `template_id` with `variables`."""

    from_: str | None = Field(None, alias="from", max_length=400)
    to: str | list[str] = Field(
        description=f"one address, or a list of at most {MAX_ADDRESSES}",
        examples=["user@example.com"],
    )
    subject: str | None = Field(
        None, max_length=2000, description="required with inline content; Handlebars"
    )
    html: str | None = Field(None, max_length=MAX_TEMPLATE_CHARS)
    text: str | None = Field(
        None, max_length=MAX_TEMPLATE_CHARS, description="derived from html when missing"
    )
    template_id: str | None = Field(None, min_length=1, max_length=64)
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="for the template, or for {{…}} in inline content; the same for every address",
    )
    reply_to: list[str] | str | None = None
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=f"at most {MAX_HEADERS} extra headers; names of letters, digits and '-' "
        "(From, To, Subject, Date, Message-ID, List-Unsubscribe and other headers mailer "
        "writes are refused); values without CR, LF or control characters",
    )
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)
    metadata: dict[str, Any] = Field(default_factory=dict)
    send_at: datetime | None = Field(
        None, description="ISO 8601 with a timezone, at most 365 days ahead"
    )
    attachments: list[AttachmentIn] = Field(
        default_factory=list,
        max_length=MAX_ATTACHMENTS,
        description="at most 10 MB decoded in all",
    )
    unsubscribe: bool = Field(
        False, description="add List-Unsubscribe headers (transactional mail has none)"
    )
    respect_unsubscribe: bool = Field(
        False,
        description="skip addresses suppressed because they unsubscribed (by default they "
        "still get transactional mail; bounces and complaints always skip)",
    )

    _tags = field_validator("tags")(check_tags)
    _send_at_iso = field_validator("send_at", mode="before")(parse_send_at)
    _send_at_range = field_validator("send_at")(send_at_in_range)


class EmailQueued(ResponseModel):
    id: str
    to: str
    status: str = Field(description="QUEUED, or SUPPRESSED when the address is held back")


class EmailsCreated(ResponseModel):
    data: list[EmailQueued]


class EmailOut(ResponseModel):
    id: str
    status: str
    from_: str | None = Field(None, alias="from")
    to: str
    subject: str | None = Field(description="the template version's subject (unrendered)")
    batch_id: str
    template_id: str | None = Field(description="null for inline content")
    template_version: int | None
    provider_message_id: str | None
    attempts: int
    last_error: str | None
    tags: dict[str, str]
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    updated_at: datetime
    events: list[EventOut] | None = None


class EmailPage(ResponseModel):
    data: list[EmailOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")
