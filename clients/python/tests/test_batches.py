"""Batches through the clients against the live server: send, follow, page, cancel, retry
safely with an Idempotency-Key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailer_client import (
    AsyncMailerClient,
    ConflictError,
    MailerClient,
    NotFoundError,
    Recipient,
    ValidationError,
)
from tests.helpers import address, outbox_messages_to, unique
from tests.live_server import LiveServer


@pytest.fixture
def template_id(client: MailerClient) -> str:
    return client.templates.create(
        unique("batch-tpl"),
        subject="Hi {{name}}",
        html="<p>Hello {{name}}</p>",
        variables={"name": {"type": "string"}},
    ).id


def test_send_follow_and_read_events(
    client: MailerClient, server: LiveServer, template_id: str
) -> None:
    first, second = address("a"), address("b")
    created = client.batches.create(
        template_id,
        [
            Recipient(email=first, variables={"name": "Ann"}),
            {"email": second, "variables": {"name": "Bo"}},
        ],
        metadata={"campaign": "client-tests"},
        tags={"kind": "test"},
    )
    assert (created.recipients, created.queued, created.suppressed) == (2, 2, 0)
    assert created.replayed is False

    batch = client.batches.wait(created.id, poll_interval=0.1, timeout=60)
    assert batch.status == "COMPLETED"
    assert batch.result == "all_sent"
    assert batch.counts["SENT"] == 2
    assert batch.metadata == {"campaign": "client-tests"}
    assert batch.tags == {"kind": "test"}
    assert batch.template_id == template_id

    [message] = outbox_messages_to(server.outbox, first)
    assert "Subject: Hi Ann" in message

    summary = client.batches.summary(created.id)
    assert summary.total == 2 and summary.counts["SENT"] == 2

    sent = client.batches.events(created.id, type="SENT")
    assert sorted(e.email or "" for e in sent.data) == sorted([first, second])
    assert all(e.batch_id == created.id and e.type == "SENT" for e in sent.data)
    every = list(client.batches.iter_events(created.id, page_size=1))
    assert len(every) == client.batches.events(created.id).total >= 3  # QUEUED, 2 x SENT
    assert len({e.id for e in every}) == len(every)


def test_idempotency_key_makes_a_retry_safe(client: MailerClient, template_id: str) -> None:
    key = unique("idem")
    recipients = [{"email": address(), "variables": {"name": "X"}}]
    first = client.batches.create(template_id, recipients, idempotency_key=key)
    again = client.batches.create(template_id, recipients, idempotency_key=key)
    assert again.id == first.id
    assert again.replayed is True
    with pytest.raises(ConflictError) as caught:
        client.batches.create(template_id, [{"email": address()}], idempotency_key=key)
    assert caught.value.code == "idempotency_conflict"


def test_two_calls_without_a_key_make_two_batches(client: MailerClient, template_id: str) -> None:
    recipients = [{"email": address(), "variables": {"name": "X"}}]
    one = client.batches.create(template_id, recipients)
    two = client.batches.create(template_id, recipients)
    assert one.id != two.id


def test_schedule_then_cancel(client: MailerClient, template_id: str) -> None:
    send_at = datetime.now(UTC) + timedelta(days=2)
    created = client.batches.create(
        template_id, [{"email": address(), "variables": {"name": "Z"}}], send_at=send_at
    )
    assert created.status == "SCHEDULED"
    assert created.send_at is not None and abs(created.send_at - send_at) < timedelta(seconds=1)
    assert created.id in {b.id for b in client.batches.iter(status="SCHEDULED", page_size=2)}

    with pytest.raises(TimeoutError, match="SCHEDULED"):
        client.batches.wait(created.id, timeout=0)

    cancelled = client.batches.cancel(created.id)
    assert cancelled.status == "CANCELLED"
    assert cancelled.counts["CANCELLED"] == 1
    with pytest.raises(ConflictError) as caught:
        client.batches.cancel(created.id)
    assert caught.value.status == 409 and caught.value.code == "batch_finished"


def test_bad_batch_names_each_field(client: MailerClient, template_id: str) -> None:
    with pytest.raises(ValidationError) as caught:
        client.batches.create(template_id, [{"email": "not-an-address", "variables": {}}])
    assert "recipients[0].email" in caught.value.fields
    with pytest.raises(NotFoundError):
        client.batches.get("no-such-batch")


def test_list_pages(client: MailerClient, template_id: str) -> None:
    ids = {
        client.batches.create(template_id, [{"email": address(), "variables": {"name": "P"}}]).id
        for _ in range(3)
    }
    page = client.batches.list(limit=2)
    assert len(page.data) == 2 and page.total >= 3
    listed = [b.id for b in client.batches.iter(page_size=2)]
    assert ids <= set(listed)
    assert len(listed) == len(set(listed))


async def test_async_batches(aclient: AsyncMailerClient, server: LiveServer) -> None:
    template = await aclient.templates.create(unique("async-batch"), html="<p>{{n}}</p>")
    to = address("async")
    created = await aclient.batches.create(template.id, [{"email": to, "variables": {"n": "1"}}])
    batch = await aclient.batches.get(created.id)
    assert batch.id == created.id and batch.total == 1
    events = [e async for e in aclient.batches.iter_events(created.id, page_size=1)]
    assert events and all(e.batch_id == created.id for e in events)
    assert created.id in {b.id async for b in aclient.batches.iter(page_size=5)}
    summary = await aclient.batches.summary(created.id)
    assert summary.total == 1
    done = await aclient.batches.wait(created.id, poll_interval=0.1, timeout=60)
    assert done.status == "COMPLETED"
    assert done.counts["SENT"] == 1
