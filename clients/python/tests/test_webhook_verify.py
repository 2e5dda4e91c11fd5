"""mailer_client.webhooks.verify refuses what it must: a changed body, another secret, an
old or future timestamp, missing headers. (That it accepts mailer's own signatures is tested
against the live server in test_webhook_endpoints.py.)"""

from __future__ import annotations

import base64
import json

import pytest

from mailer_client.webhooks import WebhookVerificationError, sign, verify

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 24).decode()
BODY = json.dumps(
    {"type": "email.bounced", "timestamp": "2030-01-01T00:00:00Z", "data": {"email": "a@x.io"}}
).encode()
NOW = 1_900_000_000


def _headers(secret: str = SECRET, stamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(stamp),
        "Webhook-Signature": sign(secret, "msg_1", stamp, body),
    }


def test_a_signed_message_verifies() -> None:
    event = verify(BODY, _headers(), SECRET, now=NOW)
    assert (event.id, event.type, event.data) == ("msg_1", "email.bounced", {"email": "a@x.io"})


def test_either_secret_of_a_rotation_verifies() -> None:
    headers = _headers()
    headers["Webhook-Signature"] = (
        f"{sign(OTHER, 'msg_1', NOW, BODY)} {headers['Webhook-Signature']}"
    )
    assert verify(BODY, headers, [OTHER], now=NOW).type == "email.bounced"
    assert verify(BODY, headers, SECRET, now=NOW).type == "email.bounced"


@pytest.mark.parametrize(
    ("body", "headers", "secret", "message"),
    [
        (BODY.replace(b"a@x.io", b"b@x.io"), _headers(), SECRET, "no signature matches"),
        (BODY, _headers(), OTHER, "no signature matches"),
        (BODY, _headers(stamp=NOW - 301), SECRET, "tolerance"),
        (BODY, _headers(stamp=NOW + 301), SECRET, "tolerance"),
        (BODY, {"webhook-id": "msg_1"}, SECRET, "missing"),
        (BODY, {**_headers(), "Webhook-Timestamp": "soon"}, SECRET, "not a number"),
        (BODY, _headers(), "whsec_***", r"not whsec_ \+ base64"),
    ],
)
def test_refused(body: bytes, headers: dict[str, str], secret: str, message: str) -> None:
    with pytest.raises(WebhookVerificationError, match=message):
        verify(body, headers, secret, now=NOW)
