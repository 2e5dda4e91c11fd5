"""Health, API keys, suppressions, dead letters, the reputation guard, domains and metrics
through the clients, against the live server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailer_client import (
    AsyncMailerClient,
    AuthenticationError,
    MailerClient,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from tests.conftest import FAST_RETRY
from tests.helpers import address, unique
from tests.live_server import LiveServer


def test_health_and_ready_need_no_key(server: LiveServer) -> None:
    with MailerClient(server.url, api_key="") as anonymous:
        assert anonymous.health().status == "ok"
        readiness = anonymous.ready()
        assert readiness.ready is True
        assert readiness.checks["database"]["ok"] is True
        with pytest.raises(AuthenticationError) as caught:
            anonymous.templates.list()
    assert caught.value.status == 401
    assert caught.value.code == "unauthorized"


def test_base_url_may_include_the_api_prefix(server: LiveServer) -> None:
    with MailerClient(server.url + "/api/v1/", server.admin_key) as c:
        assert c.health().status == "ok"


def test_keys_scopes_and_revocation(client: MailerClient, server: LiveServer) -> None:
    name = unique("key")
    created = client.keys.create(name)
    assert created.scopes == ["send"]
    assert created.key and created.prefix and created.key.startswith(created.prefix)
    listed = {k.id: k for k in client.keys.iter(page_size=1)}
    assert listed[created.id].name == name
    assert listed[created.id].revoked_at is None

    with MailerClient(server.url, created.key, retry=FAST_RETRY) as sender:
        assert sender.templates.list(limit=1).limit == 1
        with pytest.raises(PermissionDeniedError) as caught:
            sender.keys.list()
        assert caught.value.status == 403
        assert caught.value.code == "insufficient_scope"

        revoked = client.keys.revoke(created.id)
        assert revoked.revoked_at is not None
        with pytest.raises(AuthenticationError):
            sender.templates.list()

    admin = client.keys.create(unique("admin"), admin=True)
    assert set(admin.scopes) == {"admin", "send"}


def test_suppressions(client: MailerClient) -> None:
    first, second = address("sup"), address("sup")
    added = client.suppressions.add([first, second], note="client tests")
    assert (added.added, added.requested) == (2, 2)
    assert client.suppressions.add(first).added == 0  # already there

    page = client.suppressions.list(search=first)
    assert [s.email for s in page.data] == [first]
    assert page.data[0].reason == "MANUAL"
    manual = {s.email for s in client.suppressions.iter(reason="MANUAL", page_size=1)}
    assert {first, second} <= manual

    template = client.templates.create(unique("sup-tpl"), html="<p>x</p>")
    batch = client.batches.create(template.id, [{"email": first}, {"email": address()}])
    assert (batch.queued, batch.suppressed) == (1, 1)

    client.suppressions.remove(first)
    assert client.suppressions.list(search=first).total == 0
    with pytest.raises(NotFoundError):
        client.suppressions.remove(first)


def test_dead_letters(client: MailerClient) -> None:
    page = client.dead_letters.list(batch_id="no-such-batch")
    assert (page.total, page.data) == (0, [])
    assert list(client.dead_letters.iter(batch_id="no-such-batch")) == []
    retried = client.dead_letters.retry([])
    assert (retried.dead_letters, retried.recipients, retried.jobs) == (0, 0, 0)
    purged = client.dead_letters.purge(before=datetime(2000, 1, 1, tzinfo=UTC))
    assert purged.deleted == 0


def test_pause_and_resume_sending(client: MailerClient) -> None:
    try:
        paused = client.sending.pause("client tests")
        assert paused.paused is True
        assert paused.reason == "client tests"
        assert client.sending.status().paused is True
    finally:
        resumed = client.sending.resume()
    assert resumed.paused is False
    assert client.sending.status().paused is False


def test_domain_check_refuses_a_malformed_domain(client: MailerClient) -> None:
    # A well-formed domain would be looked up in DNS; the tests reach only 127.0.0.1.
    with pytest.raises(ValidationError) as caught:
        client.domains.check("bad..domain")
    assert caught.value.fields == ["path:domain"]


def test_metrics(client: MailerClient) -> None:
    summary = client.metrics.summary()
    assert summary.workers_alive >= 1
    assert summary.generated_at > datetime.now(UTC) - timedelta(hours=1)
    report = client.metrics.admin(hours=2)
    assert report.hours == 2
    assert report.end > report.start
    assert report.reputation.paused in (True, False)
    with pytest.raises(ValidationError) as caught:
        client.metrics.admin(hours=-1)
    assert caught.value.fields == ["query:hours"]


async def test_async_admin(aclient: AsyncMailerClient) -> None:
    assert (await aclient.health()).status == "ok"
    assert (await aclient.ready()).ready
    email = address("async-sup")
    assert (await aclient.suppressions.add(email)).added == 1
    assert [s.email async for s in aclient.suppressions.iter(search=email)] == [email]
    await aclient.suppressions.remove(email)
    key = await aclient.keys.create(unique("async-key"))
    assert key.id in {k.id async for k in aclient.keys.iter()}
    assert (await aclient.keys.revoke(key.id)).revoked_at is not None
    assert (await aclient.sending.status()).paused is False
    assert (await aclient.metrics.summary()).workers_alive >= 1
    assert (await aclient.dead_letters.list()).total == 0  # nothing fails on the outbox
