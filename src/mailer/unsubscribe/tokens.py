"""Unsubscribe tokens: an HMAC-signed recipient id, opaque and URL-safe.

Format "1" + base64url(id as 8 bytes big-endian || first 16 bytes of HMAC-SHA256), 33
characters. The leading character is the format version; a new format or key gets a new one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence

VERSION = "1"
_DOMAIN = b"mailer/unsubscribe/v1\x00"
_ID_BYTES = 8
_MAC_BYTES = 16
_BODY = re.compile(r"[A-Za-z0-9_-]{32}")
_MAX_ID = 2**63 - 1


def _mac(key: bytes, id_bytes: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + id_bytes, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(recipient_id: int, key: bytes) -> str:
    if not 0 <= recipient_id <= _MAX_ID:
        raise ValueError("recipient_id out of range")
    if not key:
        raise ValueError("key must not be empty")
    id_bytes = recipient_id.to_bytes(_ID_BYTES, "big")
    body = base64.urlsafe_b64encode(id_bytes + _mac(key, id_bytes)).decode("ascii")
    return VERSION + body


def read_token(token: str, key: bytes, *, old_keys: Sequence[bytes] = ()) -> int | None:
    """The recipient id in `token`, or None for anything not made by make_token with `key`
    (or one of `old_keys`, accepted while a secret is being rotated)."""
    if not isinstance(token, str) or len(token) != 33 or not token.startswith(VERSION):
        return None
    body = token[1:]
    if not _BODY.fullmatch(body):
        return None
    try:
        raw = base64.urlsafe_b64decode(body)
    except (binascii.Error, ValueError):
        return None
    id_bytes, mac = raw[:_ID_BYTES], raw[_ID_BYTES:]
    valid = False
    for candidate in (key, *old_keys):
        # every candidate is checked: the time taken does not tell which key matched
        valid |= bool(candidate) and hmac.compare_digest(mac, _mac(candidate, id_bytes))
    if not valid:
        return None
    recipient_id = int.from_bytes(id_bytes, "big")
    return recipient_id if recipient_id <= _MAX_ID else None
