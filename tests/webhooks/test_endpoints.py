"""POST /api/v1/webhooks/ses over HTTP, after real sends through the SES transport."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from mailer.db import session_scope
from mailer.models import Recipient, Suppression
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.errors import assert_error
from tests.fixtures.pipeline import create_template, make_recipients, post_batch, wait_batch
from tests.fixtures.ses_server import SES_ACCESS_KEY, SES_SECRET_KEY, SesTestServer
from tests.fixtures.sns_signing import TOPIC_ARN, CertFetcher, SnsTestSigner
from tests.webhooks.factories import bounce, complaint, delivery

ORIGINAL_EXAMPLE = {
    "bounce": {
        "bounceType": "Permanent",
        "bouncedRecipients": [{"emailAddress": "invalid@example.com", "status": "5.1.1"}],
    }
}


def _ses_settings(settings_factory: Any, server: SesTestServer, **extra: Any) -> Any:
    return settings_factory(
        mail_transport="ses",
        aws_endpoint_url=server.url,
        aws_access_key_id=SES_ACCESS_KEY,
        aws_secret_access_key=SES_SECRET_KEY,
        mail_from="sender@example.com",
        send_rate=0,
        **extra,
    )


async def _sent_batch(c: ApiClient, key: str, count: int) -> tuple[str, dict[str, str]]:
    template_id = await create_template(c.http, key)
    out = (await post_batch(c.http, key, template_id, make_recipients(count))).json()
    await wait_batch(c.http, key, out["id"])
    async with session_scope(c.state.sessionmaker) as session:
        result = await session.execute(
            select(Recipient.email, Recipient.provider_message_id).where(
                Recipient.batch_id == out["id"]
            )
        )
        ids = {email: str(pmid) for email, pmid in result.tuples()}
    return out["id"], ids


async def _post(c: ApiClient, payload: dict[str, Any] | bytes) -> Any:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await c.http.post(
        "/api/v1/webhooks/ses",
        content=content,
        headers={"Content-Type": "text/plain; charset=UTF-8"},
    )


async def test_signed_bounce_complaint_delivery_through_http(
    settings_factory: Any, ses_server: SesTestServer
) -> None:
    signer = SnsTestSigner.shared()
    fetcher = CertFetcher(signer)
    settings = _ses_settings(settings_factory, ses_server)
    async with api_client(settings, embedded_worker=True, sns_fetch_cert=fetcher) as c:
        key = await c.make_key(admin=True)
        batch_id, ids = await _sent_batch(c, key, 3)
        a, b, d = "user0@example.com", "user1@example.com", "user2@example.com"

        envelope = signer.notification(bounce(ids[a], [a]))
        first = await _post(c, envelope)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "processed"
        again = await _post(c, envelope)
        assert again.json()["status"] == "duplicate"

        ok = await _post(c, signer.notification(complaint(ids[b], [b]), version="1"))
        assert ok.status_code == 200
        ok = await _post(c, signer.notification(delivery(ids[d], [d])))
        assert ok.status_code == 200
        # a Delivery arriving after the bounce does not undo it
        await _post(c, signer.notification(delivery(ids[a], [a])))

        batch = (await c.http.get(f"/api/v1/batches/{batch_id}", headers=auth(key))).json()
        assert batch["counts"]["BOUNCED"] == 1
        assert batch["counts"]["COMPLAINED"] == 1
        assert batch["counts"]["DELIVERED"] == 1
        async with session_scope(c.state.sessionmaker) as session:
            statuses = dict(
                (await session.execute(select(Recipient.email, Recipient.status))).tuples().all()
            )
            suppressed = set((await session.scalars(select(Suppression.email))).all())
        assert statuses == {a: "BOUNCED", b: "COMPLAINED", d: "DELIVERED"}
        assert suppressed == {a, b}
        events = (
            await c.http.get(
                f"/api/v1/batches/{batch_id}/events", params={"type": "BOUNCE"}, headers=auth(key)
            )
        ).json()
        assert events["total"] == 1 and events["data"][0]["email"] == a
        assert len(fetcher.calls) == 1  # the certificate is cached
        exposition = (await c.http.get("/metrics")).text
        assert 'mailer_messages_total{event="bounced",transport="ses"} 1.0' in exposition
        assert 'mailer_messages_total{event="complained",transport="ses"} 1.0' in exposition


async def test_forged_and_unsigned_messages_rejected(
    settings_factory: Any, ses_server: SesTestServer
) -> None:
    signer = SnsTestSigner.shared()
    settings = _ses_settings(settings_factory, ses_server)
    async with api_client(settings, embedded_worker=True, sns_fetch_cert=CertFetcher(signer)) as c:
        key = await c.make_key(admin=True)
        _, ids = await _sent_batch(c, key, 1)
        a = "user0@example.com"
        envelope = signer.notification(bounce(ids[a], [a]))
        tampered = dict(envelope, Message=envelope["Message"].replace("Permanent", "Transient"))
        assert (await _post(c, tampered)).status_code == 403
        evil = signer.notification(
            bounce(ids[a], [a]),
            cert_url="https://s3.amazonaws.com/SimpleNotificationService-abc.pem",
        )
        assert (await _post(c, evil)).status_code == 403
        assert (await _post(c, b"{not json")).status_code == 400
        # the Node service's raw example is refused while verification is on
        assert (await _post(c, ORIGINAL_EXAMPLE)).status_code == 403
        async with session_scope(c.state.sessionmaker) as session:
            assert (await session.scalars(select(Suppression))).all() == []
            status = await session.scalar(select(Recipient.status))
        assert status == "SENT"


async def test_original_example_accepted_without_verification(client_factory: Any) -> None:
    async with client_factory(sns_verify=False) as c:
        response = await _post(c, ORIGINAL_EXAMPLE)
        assert response.status_code == 200, response.text
        async with session_scope(c.state.sessionmaker) as session:
            row = await session.get(Suppression, "invalid@example.com")
        assert row is not None and row.reason == "BOUNCE"


async def test_production_without_topics_accepts_none(
    settings_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """APP_ENV=production and SNS_TOPIC_ARNS unset: 403 naming the setting, and no
    certificate is fetched for it; start-up says so (an error with MAIL_TRANSPORT=ses)."""
    signer = SnsTestSigner.shared()
    fetcher = CertFetcher(signer)
    settings = settings_factory(app_env="production", mail_transport="ses")
    async with api_client(settings, sns_fetch_cert=fetcher) as c:
        started = capsys.readouterr().err
        response = await _post(c, signer.notification(bounce("m-1", ["x@example.com"])))
        error = assert_error(response, 403, "forbidden")
        assert "SNS_TOPIC_ARNS" in error["message"]
        confirm = await _post(c, signer.confirmation())
        assert confirm.status_code == 403
        async with session_scope(c.state.sessionmaker) as session:
            assert await session.get(Suppression, "x@example.com") is None
    assert fetcher.calls == []
    assert '"sns_no_topic_accepted"' in started and '"level": "error"' in started
    # Development keeps accepting every topic, with a warning at start.
    async with api_client(settings_factory(), sns_fetch_cert=fetcher) as c:
        started = capsys.readouterr().err
        response = await _post(c, signer.notification(bounce("m-1", ["x@example.com"])))
        assert response.status_code == 200, response.text
    assert '"sns_any_topic_accepted"' in started
    # Production with the topic listed works.
    listed = settings_factory(app_env="production", sns_topic_arns=TOPIC_ARN)
    async with api_client(listed, sns_fetch_cert=fetcher) as c:
        response = await _post(c, signer.notification(bounce("m-2", ["y@example.com"])))
        assert response.status_code == 200, response.text


async def test_topic_allowlist(settings_factory: Any) -> None:
    signer = SnsTestSigner.shared()
    settings = settings_factory(sns_topic_arns="arn:aws:sns:us-east-1:123456789012:other")
    async with api_client(settings, sns_fetch_cert=CertFetcher(signer)) as c:
        response = await _post(c, signer.notification(bounce("m-1", ["x@example.com"])))
    assert response.status_code == 403
