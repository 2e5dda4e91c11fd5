"""The embedded default: each message becomes one .eml file in OUTBOX_DIR.

Files are written to a temporary name and renamed into place, so a reader never sees a
half-written message. The file name is the Message-ID (without brackets, characters
outside [A-Za-z0-9._@+-] replaced by "_") plus ".eml"; the provider id is the Message-ID
without brackets. Building, DKIM signing and writing run in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path

from mailer.config import Settings
from mailer.transports.base import OutgoingMessage, Ready, SendResult, TransientError
from mailer.transports.dkim import DkimSigner
from mailer.transports.mime import build_mime

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def outbox_filename(message_id: str) -> str:
    stem = _UNSAFE.sub("_", message_id.strip("<>"))[:200].lstrip(".") or "message"
    return f"{stem}.eml"


class OutboxTransport:
    name = "outbox"

    def __init__(self, settings: Settings) -> None:
        self.directory = Path(settings.outbox_dir)
        self._dkim = DkimSigner.from_settings(settings)

    async def start(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    async def max_send_rate(self) -> float | None:
        return None

    def path_for(self, message_id: str) -> Path:
        return self.directory / outbox_filename(message_id)

    async def send(self, message: OutgoingMessage, ready: Ready | None = None) -> SendResult:
        if ready is not None:
            await ready()
        await asyncio.to_thread(self._write, message)
        return SendResult(provider_message_id=message.message_id.strip("<>"))

    def _write(self, message: OutgoingMessage) -> None:
        raw = build_mime(message)
        if self._dkim is not None:
            raw = self._dkim.sign(raw)
        target = self.path_for(message.message_id)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(raw)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TransientError(f"outbox write failed: {exc}", code="io") from exc
