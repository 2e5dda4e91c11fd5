"""Request and response shapes of /webhook-endpoints, and the documented event bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, create_model

from mailer.schemas import RequestModel, ResponseModel


class EndpointCreate(RequestModel):
    url: str = Field(..., min_length=1, max_length=2000, description="http(s) URL of the receiver")
    events: list[str] = Field(
        default_factory=list, max_length=50, description="event types; empty = every type"
    )
    description: str = Field("", max_length=500)
    enabled: bool = True


class EndpointUpdate(RequestModel):
    """Fields left out keep their value. Enabling clears the disabled reason."""

    url: str | None = Field(None, min_length=1, max_length=2000)
    events: list[str] | None = Field(None, max_length=50)
    description: str | None = Field(None, max_length=500)
    enabled: bool | None = None


class EndpointOut(ResponseModel):
    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        None, description="while set and in the future, messages carry two signatures"
    )
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointOut):
    secret: str = Field(..., description="Standard Webhooks secret (whsec_...); shown only now")


class EndpointPage(ResponseModel):
    data: list[EndpointOut]
    total: int
    limit: int
    offset: int


class SecretOut(ResponseModel):
    id: str
    secret: str = Field(..., description="the new secret; shown only now")
    previous_secret_expires_at: datetime | None


class TestOut(ResponseModel):
    delivery_id: int
    event_id: str
    success: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    response: str | None


class DeliveryOut(ResponseModel):
    id: int
    event_id: str = Field(..., description="the webhook-id header, the same on every attempt")
    type: str
    state: str = Field(..., description="PENDING, DELIVERED or FAILED")
    attempts: int = Field(..., description="attempts made (since the last replay)")
    status_code: int | None
    error: str | None
    latency_ms: int | None
    response: str | None = Field(None, description="first 1 KB of the receiver's answer")
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None


class DeliveryPage(ResponseModel):
    data: list[DeliveryOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


class ReplayFailed(RequestModel):
    since: datetime = Field(..., description="replay deliveries that failed at or after this")


class ReplayedOut(ResponseModel):
    replayed: int


# -- the event bodies (OpenAPI `webhooks`) -------------------------------------------------


class EmailEventData(ResponseModel):
    recipient_id: int | None
    batch_id: str | None
    email: str | None
    template_id: str | None
    metadata: dict[str, Any]
    tags: dict[str, str]
    provider_message_id: str | None


class BouncedData(EmailEventData):
    bounce_type: str | None = Field(None, description="Permanent, Transient or Undetermined")
    bounce_sub_type: str | None = None
    diagnostic_code: str | None = None


class ComplainedData(EmailEventData):
    complaint_feedback_type: str | None = None


class FailedData(EmailEventData):
    error: str | None = None


class SuppressedData(EmailEventData):
    reason: str | None = None


class UnsubscribedData(EmailEventData):
    method: str | None = Field(None, description="one-click, or the provider's subscription event")


class ClickedData(EmailEventData):
    link: str | None = None


class BatchEventData(ResponseModel):
    batch_id: str
    template_id: str | None
    metadata: dict[str, Any]
    tags: dict[str, str]
    counts: dict[str, int] | None


class PausedData(ResponseModel):
    reason: str
    by: str


class ResumedData(ResponseModel):
    by: str


class TestData(ResponseModel):
    endpoint_id: str
    message: str


def event_model(type_name: str, data: type[ResponseModel]) -> type[ResponseModel]:
    """The body model of one event type: {"type", "timestamp", "data"}."""
    fields: dict[str, Any] = {
        "type": (Literal[type_name], ...),
        "timestamp": (datetime, ...),
        "data": (data, ...),
    }
    name = "".join(part.capitalize() for part in type_name.replace("_", ".").split(".")) + "Event"
    model: type[ResponseModel] = create_model(name, __base__=ResponseModel, **fields)
    return model


EVENT_DATA: dict[str, type[ResponseModel]] = {
    "email.sent": EmailEventData,
    "email.delivered": EmailEventData,
    "email.bounced": BouncedData,
    "email.complained": ComplainedData,
    "email.failed": FailedData,
    "email.suppressed": SuppressedData,
    "email.unsubscribed": UnsubscribedData,
    "email.opened": EmailEventData,
    "email.clicked": ClickedData,
    "email.delivery_delayed": EmailEventData,
    "batch.completed": BatchEventData,
    "batch.cancelled": BatchEventData,
    "sending.paused": PausedData,
    "sending.resumed": ResumedData,
    "webhook.test": TestData,
}
EVENT_MODELS = {name: event_model(name, data) for name, data in EVENT_DATA.items()}
