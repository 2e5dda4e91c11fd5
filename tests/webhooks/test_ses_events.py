"""Parsing SES notification bodies into SesEvent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailer.webhooks.ses_events import SesEventKind, SesMessageInvalid, parse_ses_message
from tests.webhooks import factories as f

MID = "0100018e0a1b2c3d-11111111-2222-3333-4444-555555555555-000000"


@pytest.mark.parametrize("event_set", [False, True])
def test_bounce(event_set: bool) -> None:
    msg = f.bounce(
        MID,
        ["Jane@Example.com"],
        destination=["jane@example.com", "mary@example.com"],
        event_set=event_set,
    )
    ev = parse_ses_message(msg)
    assert ev.kind is SesEventKind.BOUNCE
    assert ev.type_name == "Bounce"
    assert ev.message_id == MID
    assert ev.addresses == ["jane@example.com"]  # normalized; never mail.destination
    assert (ev.bounce_type, ev.bounce_subtype) == ("Permanent", "General")
    assert ev.recipients[0].status == "5.1.1"
    assert ev.recipients[0].diagnostic_code == "smtp; 550 5.1.1 user unknown"
    assert ev.feedback_id == "fb-bounce-1"
    assert ev.timestamp == datetime(2024, 3, 1, 10, 0, 5, tzinfo=UTC)
    data = ev.event_data(ev.recipients[0])
    assert data["providerMessageId"] == MID
    assert data["bounceType"] == "Permanent"
    assert data["status"] == "5.1.1"
    assert "bouncedRecipients" not in data


def test_complaint_and_delivery() -> None:
    ev = parse_ses_message(f.complaint(MID, ["a@example.com"], feedback_type="not-spam"))
    assert ev.kind is SesEventKind.COMPLAINT
    assert ev.complaint_feedback_type == "not-spam"
    assert ev.addresses == ["a@example.com"]
    ev = parse_ses_message(f.delivery(MID, ["a@example.com", "b@example.com"], event_set=True))
    assert ev.kind is SesEventKind.DELIVERY
    assert ev.addresses == ["a@example.com", "b@example.com"]
    assert ev.event_data()["smtpResponse"].startswith("250")


@pytest.mark.parametrize(
    ("name", "kind", "addresses"),
    [
        ("Send", SesEventKind.SEND, []),
        ("Reject", SesEventKind.REJECT, []),
        ("Open", SesEventKind.OPEN, []),
        ("Click", SesEventKind.CLICK, []),
        ("Rendering Failure", SesEventKind.RENDERING_FAILURE, []),
        ("DeliveryDelay", SesEventKind.DELIVERY_DELAY, ["a@example.com"]),
        ("Subscription", SesEventKind.SUBSCRIPTION, []),
    ],
)
def test_configuration_set_events(name: str, kind: SesEventKind, addresses: list[str]) -> None:
    ev = parse_ses_message(f.event(MID, name, ["a@example.com"]))
    assert ev.kind is kind
    assert ev.message_id == MID
    assert ev.addresses == addresses
    assert ev.unsubscribe_all is (kind is SesEventKind.SUBSCRIPTION)
    assert ev.event_data()["sesEventType"] == name


def test_original_spec_example_inferred() -> None:
    ev = parse_ses_message(
        {
            "bounce": {
                "bounceType": "Permanent",
                "bouncedRecipients": [{"emailAddress": "invalid@example.com", "status": "5.1.1"}],
            }
        }
    )
    assert ev.kind is SesEventKind.BOUNCE
    assert ev.type_name is None
    assert ev.message_id is None
    assert ev.addresses == ["invalid@example.com"]
    assert ev.bounce_type == "Permanent"
    assert (
        parse_ses_message({"complaint": {"complainedRecipients": []}}).kind
        is SesEventKind.COMPLAINT
    )
    assert parse_ses_message({"delivery": {"recipients": ["x@example.com"]}}).addresses == [
        "x@example.com"
    ]


def test_unknown_and_garbage() -> None:
    assert parse_ses_message({"notificationType": "AmazonSnsSubscriptionSucceeded"}).kind is (
        SesEventKind.UNKNOWN
    )
    assert parse_ses_message({"hello": "world"}).kind is SesEventKind.UNKNOWN
    ev = parse_ses_message(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bouncedRecipients": [5, {"emailAddress": 7}, {"emailAddress": "not an address"}]
            },
            "mail": {"messageId": 12},
        }
    )
    assert ev.message_id is None
    assert [(r.email, r.valid) for r in ev.recipients] == [("not an address", False)]
    assert parse_ses_message({"notificationType": "Bounce", "bounce": "x"}).recipients == ()
    with pytest.raises(SesMessageInvalid):
        parse_ses_message(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_idna_and_display_names() -> None:
    ev = parse_ses_message(
        f.bounce(
            MID, ["User@Bücher.Example", "Name <Other@Example.COM>", "user@xn--bcher-kva.example"]
        )
    )
    # the IDNA spelling and the Unicode spelling are the same address: listed once
    assert ev.addresses == ["user@xn--bcher-kva.example", "other@example.com"]
