"""Outbound webhooks end to end: events produced by the real API and worker, delivered by
the worker's dispatcher to a real receiver on 127.0.0.1, verified with `standardwebhooks`."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from sqlalchemy import func, select

from mailer.config import Settings
from mailer.db import session_scope
from mailer.models import Recipient, WebhookDelivery
from mailer.unsubscribe.tokens import make_token
from mailer.webhook_endpoints.catalog import EVENT_TYPES
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.pipeline import (
    create_template,
    far_send_at,
    make_recipients,
    post_batch,
    wait_batch,
)
from tests.fixtures.webhook_receiver import Receiver
from tests.webhooks.factories import bounce, complaint, delivery, event

BASE = "/api/v1/webhook-endpoints"


async def _endpoint(c: ApiClient, key: str, url: str, **extra: Any) -> dict[str, Any]:
    response = await c.http.post(BASE, json={"url": url, **extra}, headers=auth(key))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _ses(c: ApiClient, payload: dict[str, Any]) -> None:
    response = await c.http.post(
        "/api/v1/webhooks/ses",
        content=json.dumps(payload).encode(),
        headers={"Content-Type": "text/plain; charset=UTF-8"},
    )
    assert response.status_code == 200, response.text


async def _provider_ids(c: ApiClient, batch_id: str) -> dict[str, str]:
    async with session_scope(c.state.sessionmaker) as session:
        result = await session.execute(
            select(Recipient.email, Recipient.provider_message_id).where(
                Recipient.batch_id == batch_id, Recipient.provider_message_id.is_not(None)
            )
        )
        return {email: str(pmid) for email, pmid in result.tuples()}


async def test_every_event_type_arrives_signed(hook_settings: Settings, receiver: Receiver) -> None:
    settings = hook_settings.model_copy(update={"sns_verify": False})
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key(admin=True)
        h = auth(key)
        hook = await _endpoint(c, key, receiver.url)
        await c.http.post(
            "/api/v1/admin/suppressions", json={"email": "held@example.com"}, headers=h
        )
        template_id = await create_template(c.http, key)
        recipients = [
            *make_recipients(2),
            {"email": "held@example.com", "variables": {"name": "H"}},
        ]
        posted = await post_batch(
            c.http,
            key,
            template_id,
            recipients,
            metadata={"campaign": "spring"},
            tags={"team": "growth"},
        )
        assert posted.status_code == 201, posted.text
        batch_id = posted.json()["id"]
        await wait_batch(c.http, key, batch_id)
        ids = await _provider_ids(c, batch_id)
        a, b = "user0@example.com", "user1@example.com"
        await _ses(c, delivery(ids[a], [a]))
        await _ses(c, event(ids[a], "Open", [a]))
        await _ses(c, event(ids[a], "Click", [a]))
        await _ses(c, event(ids[a], "DeliveryDelay", [a]))
        await _ses(c, bounce(ids[b], [b], bounce_type="Transient", subtype="MailboxFull"))
        await _ses(c, complaint(ids[a], [a]))
        await _ses(c, event(ids[b], "Reject", [b]))
        async with session_scope(c.state.sessionmaker) as session:
            rid = await session.scalar(select(Recipient.id).where(Recipient.email == a))
        assert rid is not None
        token = make_token(int(rid), settings.unsubscribe_key)
        unsubscribed = await c.http.post(
            f"/api/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
        )
        assert unsubscribed.status_code == 200, unsubscribed.text
        scheduled = await post_batch(
            c.http, key, template_id, make_recipients(1, "later"), send_at=far_send_at()
        )
        cancelled = await c.http.post(f"/api/v1/batches/{scheduled.json()['id']}/cancel", headers=h)
        assert cancelled.status_code == 200
        assert (await c.http.post("/api/v1/admin/sending/pause", headers=h)).status_code == 200
        assert (await c.http.post("/api/v1/admin/sending/resume", headers=h)).status_code == 200
        tested = await c.http.post(f"{BASE}/{hook['id']}/test", headers=h)
        assert tested.json()["success"] is True

        await receiver.wait_for(
            lambda r: {req.event["type"] for req in r.requests} >= set(EVENT_TYPES)
        )
        payloads = [r.verify(hook["secret"]) for r in receiver.requests]
        by_type: dict[str, list[dict[str, Any]]] = {}
        for p in payloads:
            by_type.setdefault(p["type"], []).append(p)
            assert set(p) == {"type", "timestamp", "data"}
            assert p["timestamp"].endswith("Z")
        sent = {p["data"]["email"]: p["data"] for p in by_type["email.sent"]}
        assert set(sent) == {a, b}
        assert sent[a]["batchId"] == batch_id and sent[a]["templateId"] == template_id
        assert sent[a]["metadata"] == {"campaign": "spring"}
        assert sent[a]["tags"] == {"team": "growth"}
        assert sent[a]["providerMessageId"] == ids[a]
        assert sent[a]["recipientId"] == rid
        bounced = by_type["email.bounced"][0]["data"]
        assert bounced["email"] == b and bounced["providerMessageId"] == ids[b]
        assert bounced["bounceType"] == "Transient" and bounced["bounceSubType"] == "MailboxFull"
        assert "550 5.1.1" in bounced["diagnosticCode"]
        assert by_type["email.suppressed"][0]["data"]["email"] == "held@example.com"
        assert by_type["email.clicked"][0]["data"]["link"] == "https://example.com/x"
        assert by_type["email.unsubscribed"][0]["data"]["recipientId"] == rid
        completed = by_type["batch.completed"][0]["data"]
        assert completed["batchId"] == batch_id and completed["counts"]["sent"] == 2
        assert by_type["batch.cancelled"][0]["data"]["batchId"] == scheduled.json()["id"]
        assert by_type["sending.paused"][0]["data"]["reason"]
        # one delivery per event: no event was sent twice
        assert len({r.id for r in receiver.requests}) == len(receiver.requests)


async def test_filter_and_no_endpoint_means_no_rows(
    hook_settings: Settings, receiver: Receiver
) -> None:
    async with api_client(hook_settings, embedded_worker=True) as c:
        key = await c.make_key(admin=True)
        template_id = await create_template(c.http, key)
        first = (await post_batch(c.http, key, template_id, make_recipients(3))).json()
        await wait_batch(c.http, key, first["id"])
        async with session_scope(c.state.sessionmaker) as session:
            assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        await _endpoint(c, key, receiver.url, events=["batch.completed"])
        second = (await post_batch(c.http, key, template_id, make_recipients(3, "b"))).json()
        await wait_batch(c.http, key, second["id"])
        await receiver.wait_for(lambda r: len(r.requests) >= 1)
        assert [r.event["type"] for r in receiver.requests] == ["batch.completed"]
        assert receiver.requests[0].event["data"]["batchId"] == second["id"]


async def test_receiver_down_then_back_gets_every_event_once(
    hook_settings: Settings, receiver: Receiver
) -> None:
    """500s first, then connection refused, then back: every event arrives, with the
    webhook-id it had on its first attempt; none is lost."""
    receiver.answer = lambda _: (500, {}, b"down")
    # Retries 0.2 s apart for long enough that none is used up while the receiver is away.
    settings = hook_settings.model_copy(update={"webhook_retry_delays": [0.2] * 100})
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key(admin=True)
        await _endpoint(c, key, receiver.url, events=["email.sent"])
        template_id = await create_template(c.http, key)
        batch = (await post_batch(c.http, key, template_id, make_recipients(20))).json()
        await wait_batch(c.http, key, batch["id"])
        await receiver.wait_for(lambda r: len({q.id for q in r.requests}) == 20)
        first_ids = {q.id for q in receiver.requests}
        await receiver.stop()
        # Attempts keep failing (connection refused) until the receiver is back.
        async with session_scope(c.state.sessionmaker) as session:
            before = await session.scalar(select(func.sum(WebhookDelivery.attempts)))
        await _wait_attempts(c, int(before or 0) + 20)
        receiver.answer = lambda _: (200, {}, b"ok")
        await receiver.start()
        await receiver.wait_for(lambda r: {q.id for q in r.accepted()} == first_ids)
        await _wait_states(c, {"DELIVERED": 20})
        accepted = Counter(q.id for q in receiver.accepted())
        assert set(accepted.values()) == {1}


async def _wait_states(c: ApiClient, expected: dict[str, int]) -> None:
    states: Counter[str] = Counter()
    for _ in range(600):
        async with session_scope(c.state.sessionmaker) as session:
            states = Counter((await session.scalars(select(WebhookDelivery.state))).all())
        if states == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"delivery states {dict(states)}, expected {expected}")


async def _wait_attempts(c: ApiClient, at_least: int) -> None:
    for _ in range(600):
        async with session_scope(c.state.sessionmaker) as session:
            total = await session.scalar(select(func.sum(WebhookDelivery.attempts)))
            errors = await session.scalar(
                select(func.count()).where(WebhookDelivery.status_code.is_(None))
            )
        if int(total or 0) >= at_least and errors:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the dispatcher made no attempts while the receiver was down")


async def test_410_disables_the_endpoint(hook_settings: Settings, receiver: Receiver) -> None:
    receiver.answer = lambda _: (410, {}, b"gone")
    async with api_client(hook_settings, embedded_worker=True) as c:
        key = await c.make_key(admin=True)
        hook = await _endpoint(c, key, receiver.url, events=["batch.completed"])
        template_id = await create_template(c.http, key)
        batch = (await post_batch(c.http, key, template_id, make_recipients(1))).json()
        await wait_batch(c.http, key, batch["id"])
        await receiver.wait_for(lambda r: len(r.requests) == 1)
        for _ in range(200):
            got = (await c.http.get(f"{BASE}/{hook['id']}", headers=auth(key))).json()
            if not got["enabled"]:
                break
            await asyncio.sleep(0.05)
        assert got["enabled"] is False and "410" in got["disabledReason"]
        log = (await c.http.get(f"{BASE}/{hook['id']}/deliveries", headers=auth(key))).json()
        assert log["data"][0]["state"] == "FAILED" and log["data"][0]["statusCode"] == 410
        assert log["data"][0]["response"] == "gone"
