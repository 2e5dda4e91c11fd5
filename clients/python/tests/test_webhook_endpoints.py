"""Outbound webhook endpoints through the clients, against the live server, with a real
receiver; the messages it gets are verified with mailer_client.webhooks.verify. Skipped,
with the reason, by a server without the endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mailer_client import AsyncMailerClient, MailerClient, NotFoundError, ValidationError
from mailer_client.webhooks import WebhookVerificationError, verify
from tests.scripted_server import Answer, ScriptedServer

pytestmark = pytest.mark.usefixtures("webhooks_api")


@pytest.fixture
def receiver() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        server.answer(*[Answer(200, {"ok": True})] * 50)
        yield server


def test_endpoint_lifecycle_and_signed_test_event(
    client: MailerClient, receiver: ScriptedServer
) -> None:
    created = client.webhook_endpoints.create(
        receiver.url + "/hook", events=["email.bounced"], description="client tests"
    )
    assert created.secret.startswith("whsec_")
    assert created.events == ["email.bounced"]
    assert created.enabled is True

    result = client.webhook_endpoints.test(created.id)
    assert result.success is True
    assert result.status_code == 200
    [message] = [r for r in receiver.received if r.path == "/hook"]
    event = verify(message.body, message.headers, created.secret)
    assert event.type == "webhook.test"
    assert event.id == message.headers["webhook-id"] == result.event_id
    with pytest.raises(WebhookVerificationError):
        verify(message.body + b" ", message.headers, created.secret)

    deliveries = list(client.webhook_endpoints.iter_deliveries(created.id, page_size=1))
    assert result.delivery_id in {d.id for d in deliveries}
    replayed = client.webhook_endpoints.replay(created.id, result.delivery_id)
    assert replayed.id == result.delivery_id
    assert replayed.event_id == result.event_id
    since = datetime.now(UTC) - timedelta(hours=1)
    assert client.webhook_endpoints.replay_failed(created.id, since).replayed == 0

    rotated = client.webhook_endpoints.rotate_secret(created.id)
    assert rotated.secret != created.secret
    assert rotated.previous_secret_expires_at is not None
    client.webhook_endpoints.test(created.id)
    last = [r for r in receiver.received if r.path == "/hook"][-1]
    assert verify(last.body, last.headers, rotated.secret).type == "webhook.test"
    assert verify(last.body, last.headers, created.secret).type == "webhook.test"  # overlap

    updated = client.webhook_endpoints.update(created.id, enabled=False, events=[])
    assert updated.enabled is False
    assert updated.events == []
    assert client.webhook_endpoints.get(created.id).enabled is False
    assert created.id in {e.id for e in client.webhook_endpoints.iter(page_size=1)}
    assert client.webhook_endpoints.list(limit=1).total >= 1

    client.webhook_endpoints.delete(created.id)
    with pytest.raises(NotFoundError):
        client.webhook_endpoints.get(created.id)


def test_a_bad_url_is_refused(client: MailerClient) -> None:
    with pytest.raises(ValidationError) as caught:
        client.webhook_endpoints.create("not a url")
    assert caught.value.details


async def test_async_webhook_endpoints(
    aclient: AsyncMailerClient, receiver: ScriptedServer
) -> None:
    created = await aclient.webhook_endpoints.create(receiver.url + "/async")
    result = await aclient.webhook_endpoints.test(created.id)
    assert result.success is True
    [message] = [r for r in receiver.received if r.path == "/async"]
    assert verify(message.body, message.headers, created.secret).type == "webhook.test"
    assert [d.id async for d in aclient.webhook_endpoints.iter_deliveries(created.id)] == [
        result.delivery_id
    ]
    await aclient.webhook_endpoints.delete(created.id)
