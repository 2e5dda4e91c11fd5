"""How rendered messages leave mailer: SES v2, SMTP or .eml files (see base.py)."""

from mailer.transports.base import (
    OutgoingMessage,
    PermanentError,
    SendingPausedError,
    SendResult,
    ThrottledError,
    TransientError,
    Transport,
    TransportError,
)
from mailer.transports.factory import build_transport

__all__ = [
    "OutgoingMessage",
    "PermanentError",
    "SendResult",
    "SendingPausedError",
    "ThrottledError",
    "TransientError",
    "Transport",
    "TransportError",
    "build_transport",
]
