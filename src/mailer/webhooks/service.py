"""SES notifications → events, recipient states, suppressions, metrics.

`handle_webhook` takes a raw POST body (what the endpoint calls); `handle_notification` applies
one parsed SES event. Both only flush: the caller commits, so a failure leaves nothing behind
(not even the dedupe row) and SNS's retry is processed afresh.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.addresses import try_normalize_email
from mailer.config import Settings
from mailer.events import bump_metrics, record_events
from mailer.models.base import utcnow
from mailer.models.enums import EventType, MetricKind, RecipientStatus, SuppressionReason
from mailer.suppressions import service as suppressions
from mailer.webhooks import repository
from mailer.webhooks.ses_events import SesEvent, SesEventKind, SesRecipient, parse_ses_message
from mailer.webhooks.sns import (
    SUBSCRIPTION_CONFIRMATION,
    UNSUBSCRIBE_CONFIRMATION,
    HttpGet,
    SnsEnvelope,
    SnsTopicNotAllowed,
    SnsVerifier,
    confirm_subscription,
    is_topic_allowed,
    load_json_object,
    parse_envelope,
)

__all__ = ["Outcome", "confirm_subscription", "handle_notification", "handle_webhook"]

log = structlog.get_logger(__name__)

SOFT_BOUNCE_WINDOW = timedelta(days=30)
_DEDUPE_KEY_MAX = 128

_EVENT_TYPE = {
    SesEventKind.SEND: EventType.SEND,
    SesEventKind.REJECT: EventType.REJECT,
    SesEventKind.BOUNCE: EventType.BOUNCE,
    SesEventKind.COMPLAINT: EventType.COMPLAINT,
    SesEventKind.DELIVERY: EventType.DELIVERY,
    SesEventKind.OPEN: EventType.OPEN,
    SesEventKind.CLICK: EventType.CLICK,
    SesEventKind.RENDERING_FAILURE: EventType.RENDERING_FAILURE,
    SesEventKind.DELIVERY_DELAY: EventType.DELIVERY_DELAY,
    SesEventKind.UNKNOWN: EventType.UNKNOWN,
}
_LATE_FINAL_FROM = (RecipientStatus.SENT, RecipientStatus.DELIVERED)


CountsObserver = Callable[[Mapping[str, int]], None]
# (the event is about a message we sent, addresses it named that the message was not sent to)
EventObserver = Callable[[bool, int], None]
_IGNORED_SHOWN = 20


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"  # this SNS MessageId (or feedbackId) was processed before
    SUBSCRIBED = "subscribed"  # SubscriptionConfirmation: SubscribeURL visited
    IGNORED = "ignored"  # UnsubscribeConfirmation: acknowledged, URL never visited


async def handle_webhook(
    session: AsyncSession,
    body: bytes | Mapping[str, Any],
    *,
    settings: Settings,
    verifier: SnsVerifier | None,
    header_type: str | None = None,
    http_get: HttpGet | None = None,
    on_counts: CountsObserver | None = None,
    on_event: EventObserver | None = None,
) -> Outcome:
    """Everything POST /webhooks/ses does. Raises SnsError subclasses (see their status_code)
    and SesMessageInvalid (400) for a raw dev-mode body that is not an SES message.
    `on_counts` receives what the notification changed, `on_event` whether it was about one
    of our messages and how many addresses it named were ignored (both for Prometheus)."""
    data = load_json_object(body) if isinstance(body, bytes) else dict(body)
    if "Type" not in data and not settings.sns_verify:
        log.warning("ses_webhook_unverified_raw_message")
        return await handle_notification(
            session,
            None,
            parse_ses_message(data),
            settings=settings,
            on_counts=on_counts,
            on_event=on_event,
        )
    env = parse_envelope(data, header_type=header_type)
    if not is_topic_allowed(
        env.topic_arn, settings.sns_topic_arns, any_when_unset=settings.sns_any_topic
    ):
        raise SnsTopicNotAllowed(topic_refusal(settings, env.topic_arn))
    if settings.sns_verify:
        if verifier is None:
            raise RuntimeError("an SnsVerifier is required while SNS_VERIFY is on")
        await verifier.verify(env)
    if env.type == SUBSCRIPTION_CONFIRMATION:
        assert env.subscribe_url is not None  # parse_envelope requires it for this type
        await confirm_subscription(env.subscribe_url, http_get)
        log.info("sns_subscription_confirmed", topic_arn=env.topic_arn)
        return Outcome.SUBSCRIBED
    if env.type == UNSUBSCRIBE_CONFIRMATION:
        log.warning("sns_unsubscribe_confirmation", topic_arn=env.topic_arn)
        return Outcome.IGNORED
    inner = env.message_json()
    if isinstance(inner, dict):
        ses = parse_ses_message(inner)
    else:
        ses = SesEvent(
            kind=SesEventKind.UNKNOWN,
            type_name=None,
            message_id=None,
            detail={"message": env.message[:1000]},
        )
    return await handle_notification(
        session, env, ses, settings=settings, on_counts=on_counts, on_event=on_event
    )


def topic_refusal(settings: Settings, topic_arn: str | None) -> str:
    if not settings.sns_topic_arns:
        return (
            "SNS_TOPIC_ARNS is not set: with APP_ENV=production no SNS topic is accepted. "
            "Set it to the ARNs of the topics your SES notifications are published to."
        )
    return f"topic {topic_arn} is not in SNS_TOPIC_ARNS"


@dataclass(frozen=True, slots=True)
class _Match:
    id: int
    batch_id: str
    email: str
    status: str


@dataclass(frozen=True, slots=True)
class _Entry:
    """One event to record: an address the notification names, a recipient it matched, or both."""

    named: SesRecipient | None
    match: _Match | None


async def handle_notification(
    session: AsyncSession,
    env: SnsEnvelope | None,
    ses: SesEvent,
    *,
    settings: Settings,
    on_counts: CountsObserver | None = None,
    on_event: EventObserver | None = None,
) -> Outcome:
    """Apply one SES event. `env` is None for an unsigned raw message (development only).

    An event about one of our messages (its mail.messageId is a recipient's provider id)
    acts only on the addresses that message was sent to: anyone can have SNS deliver
    genuinely signed messages from a topic of their own (when SNS_TOPIC_ARNS allows it), so
    a bounce naming a bystander must not suppress them. The other addresses are recorded as
    ignored in the event's data. Events about messages we did not send (another application
    on the account, or no messageId) act on the addresses they name, as before."""
    now = utcnow()
    if not await _claim(session, env, ses, now):
        log.info("ses_event_duplicate", sns_message_id=env.message_id if env else None)
        return Outcome.DUPLICATE
    matches = await _recipients_of(session, ses.message_id)
    entries, ignored = _entries(ses, matches)
    batch_ids = {m.batch_id for m in matches}
    message_batch = next(iter(batch_ids)) if len(batch_ids) == 1 else None
    event_type = _event_type(ses)
    extra = {"snsMessageId": env.message_id} if env is not None else {}
    noted: dict[str, Any] = {}
    if ignored:
        noted = {"ignoredAddresses": ignored[:_IGNORED_SHOWN], "ignoredCount": len(ignored)}
        log.warning(
            "ses_event_addresses_ignored",
            ses_message_id=ses.message_id,
            ignored=len(ignored),
            sns_topic_arn=env.topic_arn if env else None,
        )
    await record_events(
        session,
        [
            {
                "batch_id": e.match.batch_id if e.match else message_batch,
                "recipient_id": e.match.id if e.match else None,
                "email": _event_email(e),
                "type": event_type,
                "data": {**ses.event_data(e.named), **extra, **noted},
                "created_at": now,
            }
            for e in entries
        ],
    )
    counts = await _apply(session, ses, entries, now, settings, extra)
    await bump_metrics(session, counts, at=now)
    if on_counts is not None:
        on_counts({str(kind): n for kind, n in counts.items()})
    if on_event is not None:
        on_event(bool(matches), len(ignored))
    log.info(
        "ses_event_processed",
        kind=ses.kind.value,
        ses_message_id=ses.message_id,
        events=len(entries),
        matched=len(matches),
        ignored=len(ignored),
    )
    return Outcome.PROCESSED


def _event_type(ses: SesEvent) -> EventType:
    if ses.kind is SesEventKind.SUBSCRIPTION:
        return EventType.UNSUBSCRIBE if ses.unsubscribe_all else EventType.UNKNOWN
    return _EVENT_TYPE[ses.kind]


def _event_email(entry: _Entry) -> str | None:
    if entry.named is not None:
        return entry.named.email[:320]
    return entry.match.email if entry.match else None


def _dedupe_key(env: SnsEnvelope | None, ses: SesEvent) -> tuple[str, str, str | None] | None:
    if env is not None:
        key, kind, topic = env.message_id, env.type, env.topic_arn[:300]
    elif ses.feedback_id:
        key, kind, topic = f"ses-feedback:{ses.feedback_id}", "raw", None
    else:
        return None
    if len(key) > _DEDUPE_KEY_MAX:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key, kind, topic


async def _claim(
    session: AsyncSession, env: SnsEnvelope | None, ses: SesEvent, now: datetime
) -> bool:
    """Insert the dedupe row; False when it already exists (a retry of a processed message)."""
    dedupe = _dedupe_key(env, ses)
    if dedupe is None:
        return True
    key, kind, topic = dedupe
    return await repository.claim_message(session, key, kind, topic, now)


async def _recipients_of(session: AsyncSession, message_id: str | None) -> list[_Match]:
    if not message_id:
        return []
    return [
        _Match(
            id=rid,
            batch_id=batch_id,
            email=try_normalize_email(email) or email.lower(),
            status=status,
        )
        for rid, batch_id, email, status in await repository.recipients_with_message(
            session, message_id
        )
    ]


def _entries(ses: SesEvent, matches: Sequence[_Match]) -> tuple[list[_Entry], list[str]]:
    """The events to record, and the addresses ignored: named by an event about one of our
    messages (`matches` not empty) that the message was not sent to."""
    if not ses.recipients:
        # message-level events (Send, Open, Click, ...): one per recipient of the message
        return [_Entry(None, m) for m in matches] or [_Entry(None, None)], []
    by_email: dict[str, list[_Match]] = {}
    for m in matches:
        by_email.setdefault(m.email, []).append(m)
    entries: list[_Entry] = []
    ignored: list[str] = []
    for named in ses.recipients:
        found = by_email.get(named.email)
        if found:
            entries.extend(_Entry(named, m) for m in found)
        elif matches:
            ignored.append(named.email[:320])
        else:
            entries.append(_Entry(named, None))
    # Every address ignored: one event about the message still records what was claimed.
    return entries or [_Entry(None, None)], ignored


_STATUS_COUNTER = {
    RecipientStatus.DELIVERED: "delivered_count",
    RecipientStatus.BOUNCED: "bounced_count",
    RecipientStatus.COMPLAINED: "complained_count",
}


async def _set_status(
    session: AsyncSession,
    ids: Sequence[int],
    to: RecipientStatus,
    from_: Sequence[RecipientStatus],
    now: datetime,
) -> None:
    """Move recipients in one of `from_` to `to`, keeping the batches' counters right."""
    if not ids:
        return
    moved = await repository.lock_recipients_in(session, ids, [s.value for s in from_])
    if not moved:
        return
    await repository.set_recipients_status(session, [rid for rid, _, _ in moved], to.value, now)
    deltas: dict[str, Counter[str]] = defaultdict(Counter)
    for _, batch_id, old in moved:
        deltas[batch_id][_STATUS_COUNTER[to]] += 1
        old_counter = _STATUS_COUNTER.get(RecipientStatus(old))
        if old_counter is not None:
            deltas[batch_id][old_counter] -= 1
    for batch_id, delta in deltas.items():
        await repository.add_to_batch_counters(session, batch_id, delta)


async def _apply(
    session: AsyncSession,
    ses: SesEvent,
    entries: Sequence[_Entry],
    now: datetime,
    settings: Settings,
    extra: dict[str, Any],
) -> dict[MetricKind, int]:
    """Recipient state changes and suppressions. Returns the metric counts to add."""
    named_ids = [e.match.id for e in entries if e.match and e.named]
    # Addresses acted on (those ignored are not in `entries`), each once.
    named_count = len({id(e.named) for e in entries if e.named is not None})
    named_valid = list(dict.fromkeys(e.named.email for e in entries if e.named and e.named.valid))
    source = {
        "type": "ses",
        "event": ses.type_name or ses.kind.value,
        "providerMessageId": ses.message_id,
        "feedbackId": ses.feedback_id,
        **extra,
    }
    source = {k: v for k, v in source.items() if v is not None}
    counts: dict[MetricKind, int] = {}
    suppressed = 0

    if ses.kind is SesEventKind.DELIVERY:
        ids = [e.match.id for e in entries if e.match]
        await _set_status(session, ids, RecipientStatus.DELIVERED, [RecipientStatus.SENT], now)
        counts[MetricKind.DELIVERED] = named_count if ses.recipients else len(ids)
    elif ses.kind is SesEventKind.BOUNCE:
        bounce_type = (ses.bounce_type or "").lower()
        source.update(bounceType=ses.bounce_type, bounceSubType=ses.bounce_subtype)
        if bounce_type == "permanent":
            await _set_status(session, named_ids, RecipientStatus.BOUNCED, _LATE_FINAL_FROM, now)
            suppressed += await suppressions.add(
                session, named_valid, SuppressionReason.BOUNCE, source
            )
            counts[MetricKind.BOUNCED] = named_count
        elif bounce_type == "transient":
            suppressed += await _soft_bounces(session, named_valid, now, settings, source)
    elif ses.kind is SesEventKind.COMPLAINT:
        if (ses.complaint_feedback_type or "").lower() != "not-spam":
            source["complaintFeedbackType"] = ses.complaint_feedback_type
            await _set_status(session, named_ids, RecipientStatus.COMPLAINED, _LATE_FINAL_FROM, now)
            suppressed += await suppressions.add(
                session, named_valid, SuppressionReason.COMPLAINT, source
            )
            counts[MetricKind.COMPLAINED] = named_count
    elif ses.kind is SesEventKind.SUBSCRIPTION and ses.unsubscribe_all:
        # The event names no address: the recipients we sent this message to unsubscribed.
        emails = list(dict.fromkeys(e.match.email for e in entries if e.match))
        suppressed += await suppressions.add(
            session,
            [e for e in emails if try_normalize_email(e)],
            SuppressionReason.UNSUBSCRIBE,
            source,
        )
        counts[MetricKind.UNSUBSCRIBED] = len(emails)
    counts[MetricKind.SUPPRESSED] = suppressed
    return counts


async def _soft_bounces(
    session: AsyncSession,
    emails: Sequence[str],
    now: datetime,
    settings: Settings,
    source: dict[str, Any],
) -> int:
    """Count a transient bounce per address; suppress those at SOFT_BOUNCE_LIMIT in 30 days."""
    if not emails:
        return 0
    await repository.add_soft_bounces(session, emails, now)
    counts = await repository.soft_bounce_counts(session, emails, now - SOFT_BOUNCE_WINDOW)
    over = {email: count for email, count in counts.items() if count >= settings.soft_bounce_limit}
    added = 0
    for email, count in over.items():
        added += await suppressions.add(
            session, [email], SuppressionReason.BOUNCE, {**source, "softBounces": count}
        )
    return added
