"""Rows for webhook tests: a batch whose recipients were SENT with a provider message id,
and SES notification bodies shaped like the AWS documentation's examples."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import (
    Batch,
    Event,
    Metric,
    Recipient,
    SoftBounce,
    Suppression,
    Template,
    TemplateVersion,
    WebhookMessage,
)
from mailer.models.base import utcnow
from mailer.models.enums import RecipientStatus

MAIL_TS = "2024-03-01T10:00:00.000Z"


async def sent_message(
    session: AsyncSession,
    emails: list[str],
    message_id: str,
    *,
    status: RecipientStatus = RecipientStatus.SENT,
) -> list[Recipient]:
    """A batch (with its template) whose recipients all carry `message_id`."""
    template = Template(name="welcome")
    session.add(template)
    await session.flush()
    version = TemplateVersion(
        template_id=template.id, version=1, name="welcome", subject="Hi", html="<p>Hi</p>"
    )
    session.add(version)
    await session.flush()
    template.current_version_id = version.id
    batch = Batch(template_id=template.id, template_version_id=version.id)
    session.add(batch)
    await session.flush()
    recipients = [
        Recipient(
            batch_id=batch.id,
            seq=i,
            email=email,
            status=status,
            provider_message_id=message_id,
            sent_at=utcnow(),
        )
        for i, email in enumerate(emails)
    ]
    session.add_all(recipients)
    await session.flush()
    return recipients


async def snapshot(session: AsyncSession) -> dict[str, Any]:
    """Everything a notification may change."""
    counts = {}
    for model in (Event, Suppression, SoftBounce, WebhookMessage):
        counts[model.__tablename__] = await session.scalar(select(func.count()).select_from(model))
    metrics = sorted((m.kind, m.count) for m in await session.scalars(select(Metric)))
    statuses = sorted(
        (r.id, r.status) for r in (await session.execute(select(Recipient.id, Recipient.status)))
    )
    return {"counts": counts, "metrics": metrics, "statuses": statuses}


def _mail(message_id: str | None, destination: list[str]) -> dict[str, Any]:
    mail: dict[str, Any] = {
        "timestamp": MAIL_TS,
        "source": "sender@example.com",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
        "sendingAccountId": "123456789012",
        "destination": destination,
        "headersTruncated": False,
        "tags": {"batch": ["b1"]},
    }
    if message_id is not None:
        mail["messageId"] = message_id
    return mail


def _typed(kind: str, event_set: bool) -> dict[str, str]:
    return {"eventType": kind} if event_set else {"notificationType": kind}


def bounce(
    message_id: str | None,
    bounced: list[str],
    *,
    bounce_type: str = "Permanent",
    subtype: str = "General",
    destination: list[str] | None = None,
    event_set: bool = False,
    feedback_id: str = "fb-bounce-1",
) -> dict[str, Any]:
    return {
        **_typed("Bounce", event_set),
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "bouncedRecipients": [
                {
                    "emailAddress": e,
                    "action": "failed",
                    "status": "5.1.1" if bounce_type == "Permanent" else "4.2.2",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
                for e in bounced
            ],
            "timestamp": "2024-03-01T10:00:05.000Z",
            "feedbackId": feedback_id,
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        },
        "mail": _mail(message_id, destination or bounced),
    }


def complaint(
    message_id: str | None,
    complained: list[str],
    *,
    feedback_type: str | None = "abuse",
    event_set: bool = False,
) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "userAgent": "ExampleCorp Feedback Loop (V0.01)",
        "complainedRecipients": [{"emailAddress": e} for e in complained],
        "timestamp": "2024-03-01T10:05:00.000Z",
        "feedbackId": "fb-complaint-1",
        "arrivalDate": "2024-03-01T10:04:00.000Z",
    }
    if feedback_type is not None:
        detail["complaintFeedbackType"] = feedback_type
    return {
        **_typed("Complaint", event_set),
        "complaint": detail,
        "mail": _mail(message_id, complained),
    }


def delivery(
    message_id: str | None, delivered: list[str], *, event_set: bool = False
) -> dict[str, Any]:
    return {
        **_typed("Delivery", event_set),
        "delivery": {
            "timestamp": "2024-03-01T10:00:02.000Z",
            "processingTimeMillis": 546,
            "recipients": delivered,
            "smtpResponse": "250 ok:  Message 64111812 accepted",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
            "remoteMtaIp": "127.0.2.0",
        },
        "mail": _mail(message_id, delivered),
    }


def event(message_id: str | None, kind: str, destination: list[str]) -> dict[str, Any]:
    """A configuration-set event of the message-level kinds."""
    details: dict[str, tuple[str, dict[str, Any]]] = {
        "Send": ("send", {}),
        "Reject": ("reject", {"reason": "Bad content"}),
        "Open": (
            "open",
            {"ipAddress": "192.0.2.1", "timestamp": "2024-03-01T11:00:00.000Z", "userAgent": "UA"},
        ),
        "Click": (
            "click",
            {
                "ipAddress": "192.0.2.1",
                "link": "https://example.com/x",
                "linkTags": {"samplekey0": ["samplevalue0"]},
                "timestamp": "2024-03-01T11:00:00.000Z",
                "userAgent": "UA",
            },
        ),
        "Rendering Failure": (
            "failure",
            {"errorMessage": "Attribute 'name' is not present", "templateName": "T"},
        ),
        "DeliveryDelay": (
            "deliveryDelay",
            {
                "timestamp": "2024-03-01T11:00:00.000Z",
                "delayType": "TransientCommunicationFailure",
                "expirationTime": "2024-03-02T10:00:00.000Z",
                "delayedRecipients": [
                    {"emailAddress": e, "status": "4.4.1", "diagnosticCode": "smtp; 421 4.4.1"}
                    for e in destination
                ],
            },
        ),
        "Subscription": (
            "subscription",
            {
                "contactList": "Newsletter",
                "timestamp": "2024-03-01T11:00:00.000Z",
                "source": "UnsubscribeHeader",
                "newTopicPreferences": {
                    "unsubscribeAll": True,
                    "topicSubscriptionStatus": [
                        {"topicName": "News", "subscriptionStatus": "OptOut"}
                    ],
                },
                "oldTopicPreferences": {"unsubscribeAll": False},
            },
        ),
    }
    key, detail = details[kind]
    return {"eventType": kind, key: detail, "mail": _mail(message_id, destination)}
