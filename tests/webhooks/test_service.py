"""SES notifications through signed SNS envelopes, applied to a real database."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.config import Settings
from mailer.models import Event, Metric, Recipient, SoftBounce, Suppression
from mailer.models.base import utcnow
from mailer.models.enums import EventType, RecipientStatus
from mailer.webhooks.service import Outcome, handle_webhook
from mailer.webhooks.sns import (
    UNSUBSCRIBE_CONFIRMATION,
    SnsMessageInvalid,
    SnsSignatureInvalid,
    SnsTopicNotAllowed,
    SnsVerifier,
)
from tests.fixtures.sns_signing import BAD_CERT_URLS, TOPIC_ARN, CertFetcher, SnsTestSigner, body
from tests.webhooks import factories as f

SIGNER = SnsTestSigner.shared()
MID = "0100018e0a1b2c3d-aaaaaaaa-2222-3333-4444-555555555555-000000"
Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory(sns_topic_arns=[TOPIC_ARN], soft_bounce_limit=3)
    return s


@pytest.fixture
def verifier() -> SnsVerifier:
    return SnsVerifier(CertFetcher(SIGNER))


class Hook:
    """Posts bodies the way the endpoint will: one session per request, committed."""

    def __init__(self, sessionmaker: Maker, settings: Settings, verifier: SnsVerifier) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.verifier = verifier
        self.visited: list[str] = []

    async def _get(self, url: str) -> int:
        self.visited.append(url)
        return 200

    async def post(self, payload: bytes, **kwargs: Any) -> Outcome:
        async with self.sessionmaker() as session:
            outcome = await handle_webhook(
                session,
                payload,
                settings=kwargs.pop("settings", self.settings),
                verifier=self.verifier,
                http_get=self._get,
                **kwargs,
            )
            await session.commit()
            return outcome

    async def ses(
        self, message: dict[str, Any] | str, *, on_event: Any = None, **kwargs: Any
    ) -> Outcome:
        return await self.post(SIGNER.notification_body(message, **kwargs), on_event=on_event)


@pytest.fixture
def hook(sessionmaker: Maker, settings: Settings, verifier: SnsVerifier) -> Hook:
    return Hook(sessionmaker, settings, verifier)


async def _sent(
    sessionmaker: Maker, emails: list[str], message_id: str = MID, **kw: Any
) -> list[Recipient]:
    async with sessionmaker() as session:
        rows = await f.sent_message(session, emails, message_id, **kw)
        await session.commit()
        return rows


async def _state(sessionmaker: Maker) -> dict[str, Any]:
    async with sessionmaker() as session:
        statuses = {r.email: r.status for r in await session.scalars(select(Recipient))}
        events = [
            (e.type, e.email, e.batch_id, e.recipient_id, e.data)
            for e in await session.scalars(select(Event).order_by(Event.id))
        ]
        suppressions = {
            s.email: (s.reason, s.source) for s in await session.scalars(select(Suppression))
        }
        metrics: dict[str, int] = {}
        for m in await session.scalars(select(Metric)):
            metrics[m.kind] = metrics.get(m.kind, 0) + m.count
        soft = len((await session.scalars(select(SoftBounce))).all())
    return {
        "statuses": statuses,
        "events": events,
        "suppressions": suppressions,
        "metrics": metrics,
        "soft": soft,
    }


async def _snapshot(sessionmaker: Maker) -> dict[str, Any]:
    async with sessionmaker() as session:
        return await f.snapshot(session)


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("event_set", [False, True])
async def test_permanent_bounce(
    hook: Hook, sessionmaker: Maker, version: str, event_set: bool
) -> None:
    [rec] = await _sent(sessionmaker, ["jane@example.com"])
    outcome = await hook.ses(
        f.bounce(MID, ["Jane@Example.com"], event_set=event_set), version=version
    )
    assert outcome is Outcome.PROCESSED
    state = await _state(sessionmaker)
    assert state["statuses"] == {"jane@example.com": RecipientStatus.BOUNCED}
    [(etype, email, batch_id, recipient_id, data)] = state["events"]
    assert (etype, email, batch_id, recipient_id) == (
        "BOUNCE",
        "jane@example.com",
        rec.batch_id,
        rec.id,
    )
    assert data["providerMessageId"] == MID
    assert data["status"] == "5.1.1"
    assert data["bounceType"] == "Permanent"
    assert "snsMessageId" in data
    reason, source = state["suppressions"]["jane@example.com"]
    assert reason == "BOUNCE"
    assert source["providerMessageId"] == MID
    assert source["bounceType"] == "Permanent"
    assert state["metrics"] == {"bounced": 1, "suppressed": 1}


async def test_bounce_names_one_of_three(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com", "b@example.com", "c@example.com"])
    destination = ["a@example.com", "b@example.com", "c@example.com"]
    await hook.ses(f.bounce(MID, ["b@example.com"], destination=destination))
    state = await _state(sessionmaker)
    assert state["statuses"] == {
        "a@example.com": "SENT",
        "b@example.com": "BOUNCED",
        "c@example.com": "SENT",
    }
    assert list(state["suppressions"]) == ["b@example.com"]
    assert [e[1] for e in state["events"]] == ["b@example.com"]


async def test_same_notification_twice_processed_once(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com"])
    payload = SIGNER.notification_body(f.bounce(MID, ["a@example.com"], bounce_type="Transient"))
    assert await hook.post(payload) is Outcome.PROCESSED
    before = await _snapshot(sessionmaker)
    assert await hook.post(payload) is Outcome.DUPLICATE
    assert await _snapshot(sessionmaker) == before
    assert before["counts"]["soft_bounces"] == 1


async def test_concurrent_duplicates_processed_once(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com"])
    payload = SIGNER.notification_body(f.delivery(MID, ["a@example.com"]))
    outcomes = await asyncio.gather(*(hook.post(payload) for _ in range(4)))
    assert sorted(outcomes) == sorted([Outcome.PROCESSED] + [Outcome.DUPLICATE] * 3)
    state = await _state(sessionmaker)
    assert len(state["events"]) == 1
    assert state["metrics"] == {"delivered": 1}


async def test_delivery_then_late_bounce_and_complaint(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com", "b@example.com"])
    await hook.ses(f.delivery(MID, ["a@example.com", "b@example.com"]))
    state = await _state(sessionmaker)
    assert set(state["statuses"].values()) == {"DELIVERED"}
    assert state["metrics"] == {"delivered": 2}
    await hook.ses(f.bounce(MID, ["a@example.com"]))  # late bounce
    await hook.ses(f.complaint(MID, ["b@example.com"]))
    state = await _state(sessionmaker)
    assert state["statuses"] == {"a@example.com": "BOUNCED", "b@example.com": "COMPLAINED"}
    assert state["suppressions"]["b@example.com"][0] == "COMPLAINT"
    assert [e[0] for e in state["events"]] == ["DELIVERY", "DELIVERY", "BOUNCE", "COMPLAINT"]


async def test_delivery_after_bounce_keeps_bounced(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com"])
    await hook.ses(f.bounce(MID, ["a@example.com"]))
    await hook.ses(f.delivery(MID, ["a@example.com"]))
    await hook.ses(f.complaint(MID, ["a@example.com"]))
    state = await _state(sessionmaker)
    assert state["statuses"] == {"a@example.com": "BOUNCED"}
    assert state["suppressions"]["a@example.com"][0] == "BOUNCE"  # first reason wins
    assert [e[0] for e in state["events"]] == ["BOUNCE", "DELIVERY", "COMPLAINT"]


@pytest.mark.parametrize("feedback", ["abuse", None])
async def test_complaint_suppresses(hook: Hook, sessionmaker: Maker, feedback: str | None) -> None:
    await _sent(sessionmaker, ["a@example.com"])
    await hook.ses(f.complaint(MID, ["a@example.com"], feedback_type=feedback, event_set=True))
    state = await _state(sessionmaker)
    assert state["statuses"] == {"a@example.com": "COMPLAINED"}
    assert state["suppressions"]["a@example.com"][0] == "COMPLAINT"
    assert state["metrics"] == {"complained": 1, "suppressed": 1}


async def test_not_spam_complaint_does_not_suppress(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com"])
    await hook.ses(f.complaint(MID, ["a@example.com"], feedback_type="not-spam"))
    state = await _state(sessionmaker)
    assert state["statuses"] == {"a@example.com": "SENT"}
    assert state["suppressions"] == {}
    assert [e[0] for e in state["events"]] == ["COMPLAINT"]
    assert state["metrics"] == {}


async def test_soft_bounce_limit(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com", "b@example.com"])
    async with sessionmaker() as session:  # two old ones for b: outside the 30-day window
        old = utcnow() - timedelta(days=31)
        session.add_all([SoftBounce(email="b@example.com", created_at=old) for _ in range(2)])
        await session.commit()
    for i in range(3):
        named = ["a@example.com", "b@example.com"] if i else ["a@example.com"]
        await hook.ses(f.bounce(MID, named, bounce_type="Transient", subtype="MailboxFull"))
        state = await _state(sessionmaker)
        if i < 2:
            assert state["suppressions"] == {}
    assert list(state["suppressions"]) == ["a@example.com"]
    reason, source = state["suppressions"]["a@example.com"]
    assert reason == "BOUNCE"
    assert source["softBounces"] == 3
    assert source["bounceType"] == "Transient"
    assert state["statuses"] == {"a@example.com": "SENT", "b@example.com": "SENT"}
    assert state["soft"] == 7  # b: 2 outside the window + 2 inside, below the limit of 3
    assert state["metrics"] == {"suppressed": 1}


async def test_undetermined_bounce_records_only(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com"])
    await hook.ses(
        f.bounce(MID, ["a@example.com"], bounce_type="Undetermined", subtype="Undetermined")
    )
    state = await _state(sessionmaker)
    assert state["statuses"] == {"a@example.com": "SENT"}
    assert state["suppressions"] == {}
    assert state["soft"] == 0
    assert [e[0] for e in state["events"]] == ["BOUNCE"]


@pytest.mark.parametrize(
    ("name", "event_type"),
    [
        ("Send", EventType.SEND),
        ("Reject", EventType.REJECT),
        ("Open", EventType.OPEN),
        ("Click", EventType.CLICK),
        ("Rendering Failure", EventType.RENDERING_FAILURE),
        ("DeliveryDelay", EventType.DELIVERY_DELAY),
    ],
)
async def test_message_level_events_record_only(
    hook: Hook, sessionmaker: Maker, name: str, event_type: EventType
) -> None:
    [rec] = await _sent(sessionmaker, ["a@example.com"])
    await hook.ses(f.event(MID, name, ["a@example.com"]))
    state = await _state(sessionmaker)
    assert state["statuses"] == {"a@example.com": "SENT"}
    assert state["suppressions"] == {}
    assert state["metrics"] == {}
    [(etype, email, batch_id, recipient_id, data)] = state["events"]
    assert (etype, email, batch_id, recipient_id) == (
        event_type,
        "a@example.com",
        rec.batch_id,
        rec.id,
    )
    assert data["sesEventType"] == name


async def test_subscription_unsubscribe_all(hook: Hook, sessionmaker: Maker) -> None:
    [rec] = await _sent(sessionmaker, ["a@example.com"])
    await _sent(sessionmaker, ["other@example.com"], message_id="other-message")
    await hook.ses(f.event(MID, "Subscription", ["a@example.com", "other@example.com"]))
    state = await _state(sessionmaker)
    assert list(state["suppressions"]) == ["a@example.com"]
    assert state["suppressions"]["a@example.com"][0] == "UNSUBSCRIBE"
    assert [(e[0], e[1], e[3]) for e in state["events"]] == [
        ("UNSUBSCRIBE", "a@example.com", rec.id)
    ]
    assert state["metrics"] == {"unsubscribed": 1, "suppressed": 1}


async def test_unknown_message_still_recorded(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com"])
    assert await hook.ses(f.bounce("someone-elses-message", ["x@example.com"])) is Outcome.PROCESSED
    assert await hook.ses(f.event("unknown-2", "Open", ["y@example.com"])) is Outcome.PROCESSED
    assert await hook.ses("plain text published to the topic") is Outcome.PROCESSED
    assert (
        await hook.ses({"notificationType": "AmazonSnsSubscriptionSucceeded"}) is Outcome.PROCESSED
    )
    state = await _state(sessionmaker)
    assert state["statuses"] == {"a@example.com": "SENT"}
    assert [(e[0], e[1], e[2], e[3]) for e in state["events"]] == [
        ("BOUNCE", "x@example.com", None, None),
        ("OPEN", None, None, None),
        ("UNKNOWN", None, None, None),
        ("UNKNOWN", None, None, None),
    ]
    assert list(state["suppressions"]) == ["x@example.com"]  # it was named in the bounce


async def test_address_not_among_message_recipients(hook: Hook, sessionmaker: Maker) -> None:
    """A bounce about our message naming only an address it was not sent to: recorded,
    nothing suppressed (a forged event must not suppress a bystander)."""
    [rec] = await _sent(sessionmaker, ["a@example.com"])
    seen: list[tuple[bool, int]] = []
    await hook.ses(f.bounce(MID, ["alias@example.com"]), on_event=lambda *a: seen.append(a))
    state = await _state(sessionmaker)
    assert state["statuses"] == {"a@example.com": "SENT"}
    [(etype, email, batch_id, recipient_id, data)] = state["events"]
    assert (etype, email, batch_id, recipient_id) == ("BOUNCE", None, rec.batch_id, None)
    assert data["ignoredAddresses"] == ["alias@example.com"] and data["ignoredCount"] == 1
    assert state["suppressions"] == {}
    assert "bounced" not in state["metrics"]
    assert seen == [(True, 1)]


@pytest.mark.parametrize("kind", ["bounce", "complaint"])
async def test_event_about_our_message_acts_only_on_its_recipients(
    hook: Hook, sessionmaker: Maker, kind: str
) -> None:
    """A genuinely signed event about one of our messages that also names bystanders: the
    recipients are bounced/complained and suppressed, the bystanders only listed as ignored."""
    a, _ = await _sent(sessionmaker, ["a@example.com", "b@example.com"])
    named = ["a@example.com", "victim@example.net", "ceo@example.org"]
    event = f.bounce(MID, named) if kind == "bounce" else f.complaint(MID, named)
    seen: list[tuple[bool, int]] = []
    assert await hook.ses(event, on_event=lambda *x: seen.append(x)) is Outcome.PROCESSED
    state = await _state(sessionmaker)
    final = "BOUNCED" if kind == "bounce" else "COMPLAINED"
    assert state["statuses"] == {"a@example.com": final, "b@example.com": "SENT"}
    assert list(state["suppressions"]) == ["a@example.com"]
    [(_, email, batch_id, recipient_id, data)] = state["events"]
    assert (email, batch_id, recipient_id) == ("a@example.com", a.batch_id, a.id)
    assert data["ignoredAddresses"] == ["victim@example.net", "ceo@example.org"]
    assert data["ignoredCount"] == 2
    assert state["metrics"][final.lower()] == 1
    assert seen == [(True, 2)]


async def test_event_about_a_message_we_did_not_send_acts_as_before(
    hook: Hook, sessionmaker: Maker
) -> None:
    """Another sender on the same account (or an invented messageId): the named addresses
    are suppressed as they come from our own topic, and counted apart."""
    await _sent(sessionmaker, ["a@example.com"])
    seen: list[tuple[bool, int]] = []
    await hook.ses(
        f.complaint("not-one-of-ours", ["x@example.com"]), on_event=lambda *x: seen.append(x)
    )
    state = await _state(sessionmaker)
    assert list(state["suppressions"]) == ["x@example.com"]
    assert "ignoredCount" not in state["events"][0][4]
    assert seen == [(False, 0)]


async def test_rejected_messages_change_nothing(hook: Hook, sessionmaker: Maker) -> None:
    await _sent(sessionmaker, ["a@example.com"])
    good = SIGNER.notification(f.bounce(MID, ["a@example.com"]))
    forged = SnsTestSigner().notification(f.bounce(MID, ["a@example.com"]))
    tampered = dict(good, Message=good["Message"].replace("Permanent", "Transient"))
    other_topic = SIGNER.notification(f.bounce(MID, ["a@example.com"]), topic_arn=TOPIC_ARN + "-x")
    missing = {k: v for k, v in good.items() if k != "Signature"}
    cases: list[tuple[bytes, type[Exception]]] = [
        (body(forged), SnsSignatureInvalid),
        (body(tampered), SnsSignatureInvalid),
        (body(other_topic), SnsTopicNotAllowed),
        (body(missing), SnsMessageInvalid),
        (b"{not json", SnsMessageInvalid),
        (body(f.bounce(MID, ["a@example.com"])), SnsMessageInvalid),  # raw SES while verifying
    ]
    cases += [
        (
            body(SIGNER.notification(f.bounce(MID, ["a@example.com"]), cert_url=url)),
            SnsSignatureInvalid,
        )
        for url in BAD_CERT_URLS
    ]
    before = await _snapshot(sessionmaker)
    for payload, error in cases:
        with pytest.raises(error):
            await hook.post(payload)
    with pytest.raises(SnsMessageInvalid):
        await hook.post(body(good), header_type="SubscriptionConfirmation")
    assert await _snapshot(sessionmaker) == before
    assert hook.verifier is not None
    assert await hook.post(body(good)) is Outcome.PROCESSED  # the genuine one still works


async def test_subscription_confirmation(hook: Hook, sessionmaker: Maker) -> None:
    conf = SIGNER.confirmation(version="1")
    assert await hook.post(body(conf)) is Outcome.SUBSCRIBED
    assert hook.visited == [conf["SubscribeURL"]]
    with pytest.raises(SnsTopicNotAllowed):
        await hook.post(body(SIGNER.confirmation(topic_arn=TOPIC_ARN + "-x")))
    with pytest.raises(SnsSignatureInvalid):
        await hook.post(body(dict(SIGNER.confirmation(), Token="forged")))
    evil = SIGNER.confirmation(subscribe_url="https://evil.example/?Action=ConfirmSubscription")
    with pytest.raises(SnsMessageInvalid):
        await hook.post(body(evil))
    assert await hook.post(body(SIGNER.confirmation(UNSUBSCRIBE_CONFIRMATION))) is Outcome.IGNORED
    assert hook.visited == [conf["SubscribeURL"]]
    assert (await _snapshot(sessionmaker))["counts"]["webhook_messages"] == 0


async def test_raw_messages_when_verification_is_off(
    hook: Hook, sessionmaker: Maker, settings_factory: Any
) -> None:
    dev = settings_factory(sns_verify=False, sns_topic_arns=[TOPIC_ARN])
    example = (  # the Node service's documented example, as written
        b'{"bounce": {"bounceType": "Permanent", "bouncedRecipients": '
        b'[{"emailAddress": "invalid@example.com","status":"5.1.1"}]}}'
    )
    assert await hook.post(example, settings=dev) is Outcome.PROCESSED
    assert await hook.post(example, settings=dev) is Outcome.PROCESSED  # no id to dedupe on
    with_feedback = body(f.bounce(None, ["b@example.com"], feedback_id="fb-raw"))
    assert await hook.post(with_feedback, settings=dev) is Outcome.PROCESSED
    assert await hook.post(with_feedback, settings=dev) is Outcome.DUPLICATE
    # an envelope is still parsed, but its signature is not checked
    unsigned = dict(SIGNER.notification(f.delivery("m", ["c@example.com"])), Signature="x")
    assert await hook.post(body(unsigned), settings=dev) is Outcome.PROCESSED
    with pytest.raises(SnsMessageInvalid):
        await hook.post(b"[]", settings=dev)
    state = await _state(sessionmaker)
    assert state["suppressions"].keys() == {"invalid@example.com", "b@example.com"}
    assert [(e[0], e[1], e[2]) for e in state["events"]] == [
        ("BOUNCE", "invalid@example.com", None),
        ("BOUNCE", "invalid@example.com", None),
        ("BOUNCE", "b@example.com", None),
        ("DELIVERY", "c@example.com", None),
    ]
