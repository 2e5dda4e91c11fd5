"""The Transport protocol: how a rendered message leaves mailer.

Implementations: ses.py (SES v2 SendEmail), smtp.py (any SMTP relay), outbox.py (.eml files).
Errors are classified here so the delivery layer decides retries the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Called by a transport once it holds a ready connection, just before the message's first
# byte goes out (the rate limiter's last word: see delivery/chunk.py). If it raises, nothing
# is sent and the connection is kept.
Ready = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MailAttachment:
    """A file sent with a message (checked at creation: filename without controls or quotes,
    content type `type/subtype`)."""

    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A fully rendered message. Header values have already been checked (no CR/LF/controls)."""

    message_id: str  # RFC 5322 Message-ID including angle brackets: "<id@domain>"
    from_addr: str  # "Name <addr>" or "addr"; ASCII domain (IDNA already applied)
    to: str  # one recipient address
    subject: str
    html: str | None
    text: str | None
    reply_to: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. List-Unsubscribe
    tags: Mapping[str, str] = field(default_factory=dict)  # names/values [A-Za-z0-9_-]
    attachments: tuple[MailAttachment, ...] = ()


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_message_id: str


class TransportError(Exception):
    """Base of all send failures. `code` is a short machine code (e.g. SMTP status, SES error)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientError(TransportError):
    """Retry later with backoff (timeouts, connection errors, 4xx SMTP, 5xx HTTP)."""


class PermanentError(TransportError):
    """Never retry this message (SES MessageRejected, SMTP 5xx for the recipient, bad content)."""


class ThrottledError(TransientError):
    """The provider asks everyone to slow down. Does not use up an attempt."""

    def __init__(self, message: str, *, code: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class SendingPausedError(TransportError):
    """The account cannot send at all (SES AccountSuspended / SendingPaused): stop and alert."""


@runtime_checkable
class Transport(Protocol):
    name: str

    async def start(self) -> None:
        """Open connections/clients. Called once before the first send."""

    async def send(self, message: OutgoingMessage, ready: Ready | None = None) -> SendResult:
        """Send one message or raise a TransportError subclass. `ready` is awaited once a
        connection is at hand, before anything of this message is written."""

    async def max_send_rate(self) -> float | None:
        """The provider's own rate limit in messages/s, None if unknown or unlimited."""

    async def close(self) -> None:
        """Release connections."""
