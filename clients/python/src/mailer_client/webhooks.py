"""Verify the messages mailer's outbound webhooks send you (Standard Webhooks signatures:
https://www.standardwebhooks.com/). Give `verify` the raw body, the headers and your
endpoint's secret; it returns the event, or raises `WebhookVerificationError`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from mailer_client.errors import MailerClientError
from mailer_client.models import WebhookEvent

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_TOLERANCE = 300.0  # seconds between the webhook-timestamp and now


class WebhookVerificationError(MailerClientError):
    """The message is not signed with this secret, is too old or too new, or is malformed."""


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise WebhookVerificationError("the secret is not whsec_ + base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The `v1,<base64>` signature of one message (for receivers' tests)."""
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode()


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | list[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> WebhookEvent:
    """The event of a webhook message whose signature verifies with `secret` (or one of
    several, during a rotation) and whose timestamp is within `tolerance` seconds of now."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not a number: {stamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {current - timestamp:.0f} s from now (tolerance {tolerance} s)"
        )
    raw = body.encode() if isinstance(body, str) else body
    candidates = [secret] if isinstance(secret, str) else list(secret)
    expected = [sign(s, msg_id, timestamp, raw) for s in candidates]
    given = [part for part in signatures.split() if part.startswith("v1,")]
    if not any(hmac.compare_digest(g, e) for g in given for e in expected):
        raise WebhookVerificationError("no signature matches the secret")
    event = WebhookEvent.model_validate_json(raw)
    return event.model_copy(update={"id": msg_id})
