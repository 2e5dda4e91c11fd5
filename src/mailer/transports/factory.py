"""Pick the Transport named by MAIL_TRANSPORT. Implementations are imported lazily:
aiobotocore alone adds a noticeable start-up cost to processes that never use SES."""

from __future__ import annotations

from mailer.config import Settings, TransportName
from mailer.transports.base import Transport


def build_transport(settings: Settings) -> Transport:
    """A new, not yet started transport; call `await transport.start()` before sending."""
    if settings.mail_transport is TransportName.SES:
        from mailer.transports.ses import SesTransport

        return SesTransport(settings)
    if settings.mail_transport is TransportName.SMTP:
        from mailer.transports.smtp import SmtpTransport

        return SmtpTransport(settings)
    from mailer.transports.outbox import OutboxTransport

    return OutboxTransport(settings)
