"""The outbound event types, which internal event each comes from, and the JSON body sent.

A body is `{"type", "timestamp", "data"}`. An email event's data names the recipient, its
batch, address, template, the batch's metadata and tags, the provider's message id, and the
fields of its own type.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from mailer.models.enums import EventType

EMAIL_SENT = "email.sent"
EMAIL_DELIVERED = "email.delivered"
EMAIL_BOUNCED = "email.bounced"
EMAIL_COMPLAINED = "email.complained"
EMAIL_FAILED = "email.failed"
EMAIL_SUPPRESSED = "email.suppressed"
EMAIL_UNSUBSCRIBED = "email.unsubscribed"
EMAIL_OPENED = "email.opened"
EMAIL_CLICKED = "email.clicked"
EMAIL_DELIVERY_DELAYED = "email.delivery_delayed"
BATCH_COMPLETED = "batch.completed"
BATCH_CANCELLED = "batch.cancelled"
SENDING_PAUSED = "sending.paused"
SENDING_RESUMED = "sending.resumed"
WEBHOOK_TEST = "webhook.test"

EMAIL_TYPES = (
    EMAIL_SENT,
    EMAIL_DELIVERED,
    EMAIL_BOUNCED,
    EMAIL_COMPLAINED,
    EMAIL_FAILED,
    EMAIL_SUPPRESSED,
    EMAIL_UNSUBSCRIBED,
    EMAIL_OPENED,
    EMAIL_CLICKED,
    EMAIL_DELIVERY_DELAYED,
)
EVENT_TYPES = (
    *EMAIL_TYPES,
    BATCH_COMPLETED,
    BATCH_CANCELLED,
    SENDING_PAUSED,
    SENDING_RESUMED,
    WEBHOOK_TEST,
)

# The internal event (events.type) each email webhook comes from. QUEUED, RETRY and the
# per-recipient CANCELLED are not pushed (batch.cancelled says it once for the batch).
FROM_EVENT: dict[str, str] = {
    EventType.SENT: EMAIL_SENT,
    EventType.DELIVERY: EMAIL_DELIVERED,
    EventType.BOUNCE: EMAIL_BOUNCED,
    EventType.COMPLAINT: EMAIL_COMPLAINED,
    EventType.FAILED: EMAIL_FAILED,
    EventType.REJECT: EMAIL_FAILED,
    EventType.RENDERING_FAILURE: EMAIL_FAILED,
    EventType.SUPPRESSED: EMAIL_SUPPRESSED,
    EventType.UNSUBSCRIBE: EMAIL_UNSUBSCRIBED,
    EventType.OPEN: EMAIL_OPENED,
    EventType.CLICK: EMAIL_CLICKED,
    EventType.DELIVERY_DELAY: EMAIL_DELIVERY_DELAYED,
}

# Keys of the internal event data that are bookkeeping, not part of the pushed event.
_INTERNAL_KEYS = frozenset({"snsMessageId", "sesEventType", "providerMessageId"})


def email_data(
    *,
    recipient_id: int | None,
    batch_id: str | None,
    email: str | None,
    stored: Mapping[str, Any],
    batch: Mapping[str, Any] | None,
    provider_message_id: str | None,
) -> dict[str, Any]:
    """An email event's `data`: the common fields, then the type's own (from the stored
    internal event data: bounceType/bounceSubType/diagnosticCode for a bounce, error for a
    failure, reason for a suppression, ...)."""
    data: dict[str, Any] = {
        "recipientId": recipient_id,
        "batchId": batch_id,
        "email": email,
        "templateId": batch.get("template_id") if batch else None,
        "metadata": batch.get("metadata") if batch else {},
        "tags": batch.get("tags") if batch else {},
        "providerMessageId": stored.get("providerMessageId") or provider_message_id,
    }
    for key, value in stored.items():
        if key not in _INTERNAL_KEYS and key not in data:
            data[key] = value
    return data


def body(event_type: str, created_at: datetime, data: Mapping[str, Any]) -> str:
    """The JSON body: compact, the timestamp in UTC with a Z."""
    timestamp = created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps({"type": event_type, "timestamp": timestamp, "data": data}).decode()
