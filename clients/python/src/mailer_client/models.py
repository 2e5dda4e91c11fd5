"""Typed models. Responses arrive in camelCase (`createdAt`) and are read into snake_case
attributes (`created_at`); fields the API adds later are kept (`model_extra`), not refused.
`Recipient` and `Attachment` are the request-side items you may build yourself."""

from __future__ import annotations

import base64
import mimetypes
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

T = TypeVar("T")


class ApiModel(BaseModel):
    """A response: camelCase on the wire, snake_case attributes, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="allow",
        frozen=True,
    )


# --- pages -----------------------------------------------------------------------------


class Page(ApiModel, Generic[T]):
    """One page of an offset-paginated list (`limit`, `offset`; `total` items in all)."""

    data: list[T]
    total: int
    limit: int
    offset: int


class CursorPage(ApiModel, Generic[T]):
    """One page of a cursor-paginated list: pass `next_cursor` back for the next page;
    `None` on the last one."""

    data: list[T]
    next_cursor: str | None = Field(
        None, validation_alias=AliasChoices("nextCursor", "next_cursor")
    )


# --- health ----------------------------------------------------------------------------


class Health(ApiModel):
    status: str


class Readiness(ApiModel):
    """`GET /ready`: `status` is "ready" or "not_ready"; `checks` holds each check's detail
    (database, queue, sending)."""

    status: str
    checks: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.status == "ready"


# --- API keys --------------------------------------------------------------------------


class ApiKey(ApiModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = None
    usage_count: int = 0
    revoked_at: datetime | None = None


class CreatedApiKey(ApiModel):
    """A new key: `key` is the secret, shown this once."""

    id: str
    key: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime


# --- templates -------------------------------------------------------------------------


class Template(ApiModel):
    id: str
    name: str
    subject: str
    html: str | None = None
    text: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    used_variables: list[str] = Field(default_factory=list)
    version: int
    version_id: str
    created_at: datetime
    updated_at: datetime


class RenderedTemplate(ApiModel):
    subject: str
    html: str | None = None
    text: str | None = None


# --- batches ---------------------------------------------------------------------------

BatchResult = Literal["all_sent", "partial", "all_failed", "none_sent"]


class Recipient(BaseModel):
    """One recipient of a batch (request side)."""

    model_config = ConfigDict(extra="forbid")

    email: str
    variables: dict[str, Any] = Field(default_factory=dict)


class BatchCreated(ApiModel):
    id: str
    status: str
    created_at: datetime
    send_at: datetime | None = None
    recipients: int
    queued: int
    suppressed: int
    duplicates: int
    replayed: bool = False
    """True when the server answered from an earlier request with the same Idempotency-Key
    (`Idempotent-Replayed: true`): no new batch was made."""


class Batch(ApiModel):
    id: str
    status: str
    template_id: str
    template_version_id: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    from_: str | None = Field(None, alias="from")
    reply_to: list[str] = Field(default_factory=list)
    unsubscribe: bool = True
    send_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    result: BatchResult | None = None
    total: int
    duplicates: int = 0
    counts: dict[str, int] = Field(default_factory=dict)


class BatchSummary(ApiModel):
    id: str
    status: str
    result: BatchResult | None = None
    total: int
    duplicates: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    delivery_rate: float | None = None
    delivery_rate_note: str | None = None
    bounce_rate: float | None = None
    complaint_rate: float | None = None
    first_sent_at: datetime | None = None
    last_sent_at: datetime | None = None
    created_at: datetime
    completed_at: datetime | None = None


class Event(ApiModel):
    id: int | str
    type: str
    email: str | None = None
    recipient_id: int | None = None
    batch_id: str | None = None
    created_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)


# --- single emails ---------------------------------------------------------------------


class Attachment(BaseModel):
    """A file sent with an email: `content` is base64 (use `from_bytes` or `from_path`)."""

    model_config = ConfigDict(extra="forbid")

    filename: str
    content: str
    content_type: str | None = None

    @classmethod
    def from_bytes(cls, filename: str, data: bytes, content_type: str | None = None) -> Attachment:
        return cls(
            filename=filename,
            content=base64.b64encode(data).decode("ascii"),
            content_type=content_type or mimetypes.guess_type(filename)[0],
        )

    @classmethod
    def from_path(cls, path: str | Path, content_type: str | None = None) -> Attachment:
        path = Path(path)
        return cls.from_bytes(path.name, path.read_bytes(), content_type)


class SentEmail(ApiModel):
    """One address of `POST /emails`: its message id and status (QUEUED, SUPPRESSED)."""

    id: str
    to: str
    status: str


class EmailsSent(ApiModel):
    data: list[SentEmail]
    replayed: bool = False
    """True when answered from an earlier request with the same Idempotency-Key."""


class Email(ApiModel):
    """One message (a single email, or one recipient of a batch). `subject` is the
    template's, unrendered."""

    id: str
    status: str
    from_: str | None = Field(None, alias="from")
    to: str | None = None
    subject: str | None = None
    batch_id: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    template_version_id: str | None = None
    provider_message_id: str | None = None
    attempts: int = 0
    last_error: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    updated_at: datetime | None = None
    events: list[Event] | None = None
    """Its events, oldest first (`emails.get`); None in lists."""


# --- suppressions ----------------------------------------------------------------------

SuppressionReason = Literal["BOUNCE", "COMPLAINT", "UNSUBSCRIBE", "MANUAL"]


class Suppression(ApiModel):
    email: str
    reason: str
    source: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class SuppressionsAdded(ApiModel):
    added: int
    requested: int


# --- dead letters ----------------------------------------------------------------------


class DeadLetter(ApiModel):
    id: int
    batch_id: str
    seq_start: int
    seq_end: int
    recipient_count: int
    error: str
    attempts: int
    failed_at: datetime


class DeadLettersRetried(ApiModel):
    dead_letters: int
    recipients: int
    jobs: int


class DeadLettersPurged(ApiModel):
    deleted: int


# --- sending (reputation guard), domains, metrics -------------------------------------


class SendingState(ApiModel):
    paused: bool
    reason: str | None = None
    since: datetime | None = None
    resumed_at: datetime | None = None


CheckStatus = Literal["pass", "warn", "fail"]


class DomainCheck(ApiModel):
    name: str
    status: CheckStatus
    found: list[str] = Field(default_factory=list)
    message: str
    fix: str | None = None


class DomainReport(ApiModel):
    domain: str
    status: CheckStatus
    ok: bool
    checks: list[DomainCheck]
    notes: list[str] = Field(default_factory=list)


class KindCounts(ApiModel):
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    complained: int = 0
    delivered: int = 0
    suppressed: int = 0
    retried: int = 0
    unsubscribed: int = 0


class MetricsSummary(ApiModel):
    totals: KindCounts
    last_hour: KindCounts
    queue_depth: int | None = None
    workers_alive: int
    batches: dict[str, int] = Field(default_factory=dict)
    dead_letters: int
    sending_paused: bool
    uptime_seconds: float
    generated_at: datetime


class MetricsBucket(KindCounts):
    start: datetime


class AdminMetrics(ApiModel):
    hours: int
    granularity: Literal["minute", "hour"]
    start: datetime
    end: datetime
    buckets: list[MetricsBucket]
    totals: KindCounts
    bounce_rate: float | None = None
    complaint_rate: float | None = None
    reputation: SendingState


# --- outbound webhooks -----------------------------------------------------------------


class WebhookEndpoint(ApiModel):
    """A receiver of mailer's events. `events` empty: every type."""

    id: str
    url: str
    events: list[str] = Field(default_factory=list)
    description: str = ""
    enabled: bool
    disabled_reason: str | None = None
    failing_since: datetime | None = None
    previous_secret_expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class CreatedWebhookEndpoint(WebhookEndpoint):
    """A new endpoint: `secret` (whsec_...) signs its messages and is shown this once."""

    secret: str


class WebhookSecret(ApiModel):
    """A rotated secret; the previous one still signs until `previous_secret_expires_at`."""

    id: str
    secret: str
    previous_secret_expires_at: datetime | None = None


class WebhookTestResult(ApiModel):
    delivery_id: int
    event_id: str
    success: bool
    status_code: int | None = None
    latency_ms: int
    error: str | None = None
    response: str | None = None


class WebhookDelivery(ApiModel):
    id: int
    event_id: str
    type: str
    state: str
    attempts: int
    status_code: int | None = None
    error: str | None = None
    latency_ms: int | None = None
    response: str | None = None
    created_at: datetime
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None


class WebhookDeliveriesReplayed(ApiModel):
    replayed: int


class WebhookEvent(ApiModel):
    """The body of a webhook message: `type` (`email.bounced`, ...), `timestamp`, `data`
    (camelCase keys, as the API sends them), plus `id`, the webhook-id header."""

    id: str = ""
    type: str
    timestamp: datetime
    data: dict[str, Any] = Field(default_factory=dict)
