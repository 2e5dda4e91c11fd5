"""Helpers for the transport tests (real peers: aiosmtpd, an SES-like server, moto; no
database): settings, a sample message, a DKIM key."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer.config import Settings, load_settings
from mailer.transports.base import OutgoingMessage

UNSUB_URL = "https://mailer.test/api/v1/unsubscribe/tok123"
SUBJECT = "Grüße aus Köln — test ✓"
TEXT = "Hällo Jürgen,\nthis is the text part.\n"
HTML = "<p>Hällo <b>Jürgen</b>,</p>\n<p>this is the html part.</p>\n"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "app_env": "test",
        "database_url": f"sqlite:///{tmp_path / 'unused.db'}",
        "outbox_dir": tmp_path / "outbox",
        "log_level": "warning",
    }
    values.update(overrides)
    return load_settings(**values)


def make_message(to: str = "rcpt@example.com", **overrides: Any) -> OutgoingMessage:
    values: dict[str, Any] = {
        "message_id": f"<{uuid.uuid4().hex}@mailer.test>",
        "from_addr": "Mailer Tëst <sender@example.com>",
        "to": to,
        "subject": SUBJECT,
        "html": HTML,
        "text": TEXT,
        "reply_to": ("support@example.com",),
        "headers": {
            "List-Unsubscribe": f"<{UNSUB_URL}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "tags": {"batch": "b-1", "campaign": "spring"},
    }
    values.update(overrides)
    return OutgoingMessage(**values)


def crlf_to_lf(text: str) -> str:
    return text.replace("\r\n", "\n")


class DkimKey:
    """An RSA key pair plus the DNS TXT record dkimpy's verifier should find."""

    def __init__(self, selector: str = "sel1", domain: str = "example.com") -> None:
        self.selector = selector
        self.domain = domain
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
        self.lookups: list[bytes] = []

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        self.lookups.append(name)
        if name == f"{self.selector}._domainkey.{self.domain}.".encode():
            return self.txt
        return None

    def settings(self) -> dict[str, Any]:
        return {"dkim_private_key": self.pem, "dkim_selector": self.selector}
