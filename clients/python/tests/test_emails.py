"""Single emails (POST/GET /api/v1/emails) through the clients, against the live server.
Written against the endpoints' contract; skipped (with the reason) by a server that lacks
them."""

from __future__ import annotations

import pytest

from mailer_client import (
    AsyncMailerClient,
    Attachment,
    MailerClient,
    NotFoundError,
    ValidationError,
)
from tests.helpers import address, outbox_messages_to, unique
from tests.live_server import LiveServer

pytestmark = pytest.mark.usefixtures("emails_api")


def test_send_inline_and_look_it_up(client: MailerClient, server: LiveServer) -> None:
    to = address("single")
    sent = client.emails.send(
        to,
        subject="Reset your password",
        html="<p>Your code is <b>1234</b></p>",
        tags={"kind": "reset"},
        metadata={"user": 7},
    )
    [one] = sent.data
    assert one.to == to
    assert one.status == "QUEUED"
    assert sent.replayed is False

    email = client.emails.wait(one.id, poll_interval=0.1, timeout=60)
    assert email.status == "SENT"
    assert email.id == one.id
    assert email.to == to
    assert email.subject == "Reset your password"
    assert email.created_at is not None
    assert email.events
    assert {e.type for e in email.events} >= {"SENT"}
    [message] = outbox_messages_to(server.outbox, to)
    assert "Subject: Reset your password" in message

    found = [e.id for e in client.emails.iter(to=to)]
    assert found == [one.id]
    assert one.id in {e.id for e in client.emails.iter(tag="kind:reset", page_size=1)}


def test_send_to_several_with_an_attachment(client: MailerClient, server: LiveServer) -> None:
    first, second = address("multi"), address("multi")
    sent = client.emails.send(
        [first, second],
        subject="Your invoice",
        text="Attached.",
        attachments=[Attachment.from_bytes("invoice.txt", b"total: 42\n", "text/plain")],
    )
    assert [s.to for s in sent.data] == [first, second]
    assert len({s.id for s in sent.data}) == 2
    for item in sent.data:
        assert client.emails.wait(item.id, poll_interval=0.1, timeout=60).status == "SENT"
    [message] = outbox_messages_to(server.outbox, first)
    assert "invoice.txt" in message


def test_send_with_a_template(client: MailerClient, server: LiveServer) -> None:
    template = client.templates.create(
        unique("single-tpl"),
        subject="Hi {{name}}",
        html="<p>Hello {{name}}</p>",
        variables={"name": {"type": "string"}},
    )
    to = address("tpl")
    [one] = client.emails.send(to, template_id=template.id, variables={"name": "Ada"}).data
    email = client.emails.wait(one.id, poll_interval=0.1, timeout=60)
    assert email.status == "SENT"
    assert email.template_id == template.id
    assert email.template_version == 1
    [message] = outbox_messages_to(server.outbox, to)
    assert "Subject: Hi Ada" in message


def test_idempotent_retry_sends_once(client: MailerClient) -> None:
    key = unique("idem")
    to = address("idem")
    first = client.emails.send(to, subject="Once", text="x", idempotency_key=key)
    again = client.emails.send(to, subject="Once", text="x", idempotency_key=key)
    assert [s.id for s in again.data] == [s.id for s in first.data]
    assert again.replayed is True


def test_batch_recipients_are_messages_too(client: MailerClient) -> None:
    template = client.templates.create(unique("lookup"), html="<p>x</p>")
    to = address("batch")
    batch = client.batches.create(template.id, [{"email": to}])
    messages = list(client.emails.iter(batch_id=batch.id))
    assert [m.to for m in messages] == [to]
    assert client.emails.get(messages[0].id).batch_id == batch.id


def test_bad_emails_are_refused(client: MailerClient) -> None:
    with pytest.raises(ValidationError) as caught:
        client.emails.send(address(), subject="No content")
    assert caught.value.status == 422
    assert caught.value.details
    with pytest.raises(ValidationError):
        client.emails.send([address() for _ in range(51)], subject="Too many", text="x")
    with pytest.raises(NotFoundError):
        client.emails.get("no-such-email")


async def test_async_send_and_list(aclient: AsyncMailerClient) -> None:
    to = address("async-single")
    sent = await aclient.emails.send(to, subject="Async", html="<p>hi</p>")
    [one] = sent.data
    assert (await aclient.emails.get(one.id)).to == to
    assert (await aclient.emails.wait(one.id, poll_interval=0.1, timeout=60)).status == "SENT"
    page = await aclient.emails.list(to=to)
    assert [e.id for e in page.data] == [one.id]
    assert [e.id async for e in aclient.emails.iter(to=to)] == [one.id]
