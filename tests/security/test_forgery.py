"""Forged SNS notifications and unsubscribe tokens, rechecked end to end: after real sends,
each forgery is refused and changes nothing; the genuine article then works (so the checks
can fail). Plus the per-key rate limit."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from sqlalchemy import func, select

from mailer.db import session_scope
from mailer.models import Event, Recipient, Suppression
from mailer.unsubscribe.tokens import make_token
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.pipeline import (
    create_template,
    far_send_at,
    make_recipients,
    post_batch,
    wait_batch,
)
from tests.fixtures.ses_server import SES_ACCESS_KEY, SES_SECRET_KEY, SesTestServer
from tests.fixtures.sns_signing import TOPIC_ARN, CertFetcher, SnsTestSigner
from tests.webhooks.factories import bounce

SNS_PATH = "/api/v1/webhooks/ses"


async def sent_recipients(c: ApiClient, key: str, count: int) -> dict[str, tuple[int, str]]:
    """email → (recipient id, provider message id), after a real send."""
    template_id = await create_template(c.http, key)
    out = (await post_batch(c.http, key, template_id, make_recipients(count))).json()
    await wait_batch(c.http, key, out["id"])
    async with session_scope(c.state.sessionmaker) as session:
        rows = await session.execute(
            select(Recipient.email, Recipient.id, Recipient.provider_message_id)
        )
        return {email: (int(rid), str(pmid)) for email, rid, pmid in rows.tuples()}


async def snapshot(c: ApiClient) -> tuple[dict[str, str], list[str], int]:
    """Recipient states, suppressed addresses, count of events: what a forgery must not change."""
    async with session_scope(c.state.sessionmaker) as session:
        rows = await session.execute(select(Recipient.email, Recipient.status))
        states = {str(email): str(status) for email, status in rows.tuples()}
        suppressed = sorted((await session.scalars(select(Suppression.email))).all())
        events = int(await session.scalar(select(func.count()).select_from(Event)) or 0)
    return states, suppressed, events


async def post_sns(c: ApiClient, envelope: dict[str, Any] | bytes) -> int:
    content = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    response = await c.http.post(SNS_PATH, content=content, headers={"Content-Type": "text/plain"})
    return response.status_code


async def test_forged_sns_notifications_change_nothing(
    settings_factory: Any, ses_server: SesTestServer
) -> None:
    signer = SnsTestSigner.shared()
    impostor = SnsTestSigner()  # a key of its own; the fetcher still serves the real cert
    settings = settings_factory(
        mail_transport="ses",
        aws_endpoint_url=ses_server.url,
        aws_access_key_id=SES_ACCESS_KEY,
        aws_secret_access_key=SES_SECRET_KEY,
        send_rate=0,
        sns_topic_arns=TOPIC_ARN,
    )
    async with api_client(settings, embedded_worker=True, sns_fetch_cert=CertFetcher(signer)) as c:
        key = await c.make_key(admin=True)
        sent = await sent_recipients(c, key, 2)
        email = "user0@example.com"
        notice = bounce(sent[email][1], [email])
        genuine = signer.notification(notice)
        forgeries: dict[str, dict[str, Any] | bytes] = {
            "other key": impostor.notification(notice),
            "message edited after signing": dict(
                genuine, Message=genuine["Message"].replace("Permanent", "Transient")
            ),
            "other recipient edited in": dict(
                genuine, Message=genuine["Message"].replace(email, "user1@example.com")
            ),
            "cert not on SNS": signer.notification(
                notice, cert_url="https://evil.example.com/SimpleNotificationService-a.pem"
            ),
            "cert over http": signer.notification(
                notice,
                cert_url=genuine["SigningCertURL"].replace("https://", "http://"),
            ),
            "cert on a lookalike host": signer.notification(
                notice,
                cert_url="https://sns.us-east-1.amazonaws.com.evil.example/"
                "SimpleNotificationService-a.pem",
            ),
            "topic not allowed": signer.notification(
                notice, topic_arn="arn:aws:sns:us-east-1:999999999999:attacker"
            ),
            "unknown signature version": dict(genuine, SignatureVersion="3"),
            "signature removed": {k: v for k, v in genuine.items() if k != "Signature"},
            "signature not base64": dict(genuine, Signature="%%%not-base64%%%"),
            "signature of another message": dict(
                genuine, Signature=signer.notification(notice)["Signature"]
            ),
            "raw SES JSON, unsigned": json.dumps(notice).encode(),
            "empty body": b"",
        }
        before = await snapshot(c)
        refused = {name: await post_sns(c, body) for name, body in forgeries.items()}
        after = await snapshot(c)
        accepted = await post_sns(c, genuine)
        states, suppressed, _ = await snapshot(c)
    assert {name: s for name, s in refused.items() if s not in (400, 403)} == {}
    assert after == before
    assert accepted == 200
    assert states[email] == "BOUNCED" and suppressed == [email]


async def test_forged_unsubscribe_tokens_change_nothing(client: ApiClient) -> None:
    key = await client.make_key(admin=True)
    template_id = await create_template(client.http, key)
    out = await post_batch(client.http, key, template_id, make_recipients(2), send_at=far_send_at())
    assert out.status_code == 201, out.text
    async with session_scope(client.state.sessionmaker) as session:
        ids = sorted((await session.scalars(select(Recipient.id))).all())
    secret = client.state.settings.unsubscribe_key
    genuine = make_token(ids[0], secret)
    flipped = genuine[:-3] + ("A" if genuine[-3] != "A" else "B") + genuine[-2:]
    forgeries = [
        "1" + secrets.token_urlsafe(24)[:32],
        flipped,
        make_token(ids[0], b"another-secret-of-16+chars"),
        make_token(ids[1] + 1000, b"another-secret-of-16+chars"),
        genuine[:-1],
        genuine + "A",
        "2" + genuine[1:],
        "1" * 5000,
        "..%2F..%2Fadmin%2Fkeys",
        "1ÄÖÜäöü" + genuine[7:],
        genuine.upper() if genuine.upper() != genuine else genuine.lower(),
    ]
    form = {"List-Unsubscribe": "One-Click"}
    before = await snapshot(client)
    answers = []
    for token in forgeries:
        path = f"/api/v1/unsubscribe/{token}"
        answers.append((await client.http.get(path)).status_code)
        answers.append((await client.http.post(path, data=form)).status_code)
    after = await snapshot(client)
    done = await client.http.post(f"/api/v1/unsubscribe/{genuine}", data=form)
    _, suppressed, _ = await snapshot(client)
    assert set(answers) == {404}
    assert after == before
    assert done.status_code == 200
    assert suppressed == ["user0@example.com"]


async def test_per_key_rate_limit(client_factory: Any) -> None:
    """API_RATE_LIMIT per key: one key over its budget gets 429 + Retry-After; other keys and
    failed authentications are not affected; the key recovers after Retry-After."""
    async with client_factory(api_rate_limit=20) as c:
        busy, other = await c.make_key("busy"), await c.make_key("other")
        statuses = [
            (await c.http.get("/api/v1/templates", headers=auth(busy))).status_code
            for _ in range(20)
        ]
        limited = await c.http.get("/api/v1/templates", headers=auth(busy))
        unaffected = await c.http.get("/api/v1/templates", headers=auth(other))
        invalid = await c.http.get("/api/v1/templates", headers=auth(secrets.token_hex(32)))
        await asyncio.sleep(int(limited.headers["retry-after"]) + 0.1)
        recovered = await c.http.get("/api/v1/templates", headers=auth(busy))
    assert statuses == [200] * 20
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert unaffected.status_code == 200
    assert invalid.status_code == 401
    assert recovered.status_code == 200
