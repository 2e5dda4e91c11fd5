"""Small helpers shared by the live tests."""

from __future__ import annotations

import uuid
from pathlib import Path


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def address(prefix: str = "user") -> str:
    return f"{unique(prefix)}@example.com"


def outbox_messages_to(outbox: Path, email: str) -> list[str]:
    """The .eml files the outbox transport wrote for this address."""
    return [
        text
        for path in sorted(outbox.glob("**/*.eml"))
        if f"To: {email}" in (text := path.read_text(errors="replace"))
    ]
