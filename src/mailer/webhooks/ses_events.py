"""SES notifications (identity notifications and configuration-set events), normalized.

Affected addresses come only from the event's own recipient lists (bouncedRecipients,
complainedRecipients, delivery.recipients, delayedRecipients), never from mail.destination.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from enum import StrEnum
from typing import Any

from mailer.addresses import try_normalize_email


class SesEventKind(StrEnum):
    SEND = "Send"
    REJECT = "Reject"
    BOUNCE = "Bounce"
    COMPLAINT = "Complaint"
    DELIVERY = "Delivery"
    OPEN = "Open"
    CLICK = "Click"
    RENDERING_FAILURE = "Rendering Failure"
    DELIVERY_DELAY = "DeliveryDelay"
    SUBSCRIPTION = "Subscription"
    UNKNOWN = "Unknown"


# The body key holding each kind's details.
_DETAIL_KEY = {
    SesEventKind.SEND: "send",
    SesEventKind.REJECT: "reject",
    SesEventKind.BOUNCE: "bounce",
    SesEventKind.COMPLAINT: "complaint",
    SesEventKind.DELIVERY: "delivery",
    SesEventKind.OPEN: "open",
    SesEventKind.CLICK: "click",
    SesEventKind.RENDERING_FAILURE: "failure",
    SesEventKind.DELIVERY_DELAY: "deliveryDelay",
    SesEventKind.SUBSCRIPTION: "subscription",
}
# Recipient lists inside the details; dropped from the stored detail (kept per recipient).
_RECIPIENT_LISTS = ("bouncedRecipients", "complainedRecipients", "recipients", "delayedRecipients")
_INFERABLE = (
    ("bounce", SesEventKind.BOUNCE),
    ("complaint", SesEventKind.COMPLAINT),
    ("delivery", SesEventKind.DELIVERY),
)
_BY_NAME = {kind.value.lower(): kind for kind in SesEventKind if kind is not SesEventKind.UNKNOWN}


class SesMessageInvalid(ValueError):
    """The SES message is not a JSON object."""


@dataclass(frozen=True, slots=True)
class SesRecipient:
    email: str  # normalized when valid, else lowercased as given
    valid: bool  # the address normalized cleanly (only valid addresses are ever suppressed)
    status: str | None = None
    diagnostic_code: str | None = None
    action: str | None = None

    def data(self) -> dict[str, str]:
        out = {"status": self.status, "diagnosticCode": self.diagnostic_code, "action": self.action}
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True, slots=True)
class SesEvent:
    kind: SesEventKind
    type_name: str | None  # notificationType/eventType as sent (None when inferred)
    message_id: str | None  # mail.messageId: SendEmail's MessageId
    recipients: tuple[SesRecipient, ...] = ()
    bounce_type: str | None = None  # Permanent | Transient | Undetermined
    bounce_subtype: str | None = None
    complaint_feedback_type: str | None = None
    feedback_id: str | None = None
    timestamp: datetime | None = None
    unsubscribe_all: bool = False
    detail: dict[str, Any] = field(default_factory=dict)  # event details minus recipient lists

    @property
    def addresses(self) -> list[str]:
        return [r.email for r in self.recipients]

    def event_data(self, recipient: SesRecipient | None = None) -> dict[str, Any]:
        """The `data` of the event row recorded for `recipient` (or the whole message)."""
        data: dict[str, Any] = {"sesEventType": self.type_name or self.kind.value}
        if self.message_id:
            data["providerMessageId"] = self.message_id
        data.update(self.detail)
        if recipient is not None:
            data.update(recipient.data())
        return data


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _address(raw: str) -> tuple[str, bool]:
    candidate = raw.strip()
    if "<" in candidate:
        candidate = parseaddr(candidate)[1] or candidate
    normalized = try_normalize_email(candidate)
    if normalized is not None:
        return normalized, True
    return candidate.lower(), False


def _recipients(detail: Mapping[str, Any], kind: SesEventKind) -> tuple[SesRecipient, ...]:
    if kind is SesEventKind.DELIVERY:
        entries: Any = [{"emailAddress": a} for a in detail.get("recipients") or ()]
    elif kind is SesEventKind.BOUNCE:
        entries = detail.get("bouncedRecipients")
    elif kind is SesEventKind.COMPLAINT:
        entries = detail.get("complainedRecipients")
    elif kind is SesEventKind.DELIVERY_DELAY:
        entries = detail.get("delayedRecipients")
    else:
        return ()
    if not isinstance(entries, list):
        return ()
    found: dict[str, SesRecipient] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not _str(entry.get("emailAddress")):
            continue
        email, valid = _address(entry["emailAddress"])
        found.setdefault(
            email,
            SesRecipient(
                email=email,
                valid=valid,
                status=_str(entry.get("status")),
                diagnostic_code=_str(entry.get("diagnosticCode")),
                action=_str(entry.get("action")),
            ),
        )
    return tuple(found.values())


def _kind(message: Mapping[str, Any]) -> tuple[SesEventKind, str | None]:
    name = message.get("eventType") or message.get("notificationType")
    if isinstance(name, str):
        return _BY_NAME.get(name.lower(), SesEventKind.UNKNOWN), name
    for key, kind in _INFERABLE:
        if isinstance(message.get(key), Mapping):
            return kind, None
    return SesEventKind.UNKNOWN, None


def parse_ses_message(message: Mapping[str, Any]) -> SesEvent:
    """Normalize one SES notification (the decoded SNS Message, or the raw dev-mode body)."""
    if not isinstance(message, Mapping):
        raise SesMessageInvalid("SES message must be a JSON object")
    kind, type_name = _kind(message)
    mail = message.get("mail")
    message_id = _str(mail.get("messageId")) if isinstance(mail, Mapping) else None
    if kind is SesEventKind.UNKNOWN:
        keys = sorted(str(k) for k in message)[:20]
        return SesEvent(
            kind=kind, type_name=type_name, message_id=message_id, detail={"keys": keys}
        )
    raw_detail = message.get(_DETAIL_KEY[kind])
    detail_map: Mapping[str, Any] = raw_detail if isinstance(raw_detail, Mapping) else {}
    detail = {k: v for k, v in detail_map.items() if k not in _RECIPIENT_LISTS}
    subscription_prefs = detail_map.get("newTopicPreferences")
    unsubscribe_all = (
        kind is SesEventKind.SUBSCRIPTION
        and isinstance(subscription_prefs, Mapping)
        and subscription_prefs.get("unsubscribeAll") is True
    )
    timestamp = detail_map.get("timestamp")
    if timestamp is None and isinstance(mail, Mapping):
        timestamp = mail.get("timestamp")
    return SesEvent(
        kind=kind,
        type_name=type_name,
        message_id=message_id,
        recipients=_recipients(detail_map, kind),
        bounce_type=_str(detail_map.get("bounceType")) if kind is SesEventKind.BOUNCE else None,
        bounce_subtype=(
            _str(detail_map.get("bounceSubType")) if kind is SesEventKind.BOUNCE else None
        ),
        complaint_feedback_type=(
            _str(detail_map.get("complaintFeedbackType"))
            if kind is SesEventKind.COMPLAINT
            else None
        ),
        feedback_id=_str(detail_map.get("feedbackId")),
        timestamp=_timestamp(timestamp),
        unsubscribe_all=unsubscribe_all,
        detail=detail,
    )
