"""Small helpers shared by the live tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def address(prefix: str = "user") -> str:
    return f"{unique(prefix)}@example.com"


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 60.0) -> T:
    """Read until `done` holds (the worker sends in the background); the last value read.
    The deadline only bounds a hang: nothing is asserted about how long it took."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def outbox_messages_to(outbox: Path, email: str) -> list[str]:
    """The .eml files the outbox transport wrote for this address."""
    return [
        text
        for path in sorted(outbox.glob("**/*.eml"))
        if f"To: {email}" in (text := path.read_text(errors="replace"))
    ]
