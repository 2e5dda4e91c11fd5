"""Standard Webhooks secrets and signatures (https://www.standardwebhooks.com/).

A secret is `whsec_` + base64 of 24 random bytes. A message is signed as
`v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")); during a secret rotation's
overlap the header carries both signatures, space-separated, so a receiver holding either
secret verifies it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: str | bytes) -> str:
    raw = body.encode() if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + raw
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secrets_in_force: Sequence[str], msg_id: str, timestamp: int, body: str | bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers (plus the content type) for one attempt."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(s, msg_id, timestamp, body) for s in secrets_in_force
        ),
    }
