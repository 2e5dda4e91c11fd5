"""Any SMTP relay, through aiosmtplib with a small pool of reused connections.

SMTP_URL forms:
    smtp://[user:pass@]host[:port]           plain SMTP, no TLS (default port 25); for a
                                             relay on localhost or a private network
    smtp+starttls://[user:pass@]host[:port]  STARTTLS required (default port 587); the
                                             send fails if the server does not offer it
    smtps://[user:pass@]host[:port]          implicit TLS (default port 465)
    ...?verify=false                         skip certificate verification (self-signed
                                             local relays only)
User and password are percent-decoded; AUTH is used whenever a user is given.

Up to WORKER_CONCURRENCY connections, at most SMTP_MAX_CONNECTIONS (50), are kept open and
reused; sends beyond that wait for a free connection. A connection the server closed while
idle is replaced transparently (nothing was sent on it), and a failed transaction is RSET
before the connection goes back to the pool.

Per message: MAIL, RCPT, DATA and the content, each waiting for its reply (aiosmtplib has
no PIPELINING). A plain envelope address goes out without aiosmtplib's re-parsing (_mail,
_rcpt); the content comes from mime.build_mime (plain addresses unparsed, senders cached).

Errors: 4xx → TransientError (code "451" …; "454 Throttling …" → ThrottledError);
5xx for the sender, the recipient or the message → PermanentError; connection errors
and timeouts → TransientError; authentication failures, a missing STARTTLS or an
untrusted certificate → SendingPausedError (nothing can be sent until configuration
is fixed). The provider message id is our Message-ID without brackets: it is what
bounces quote back.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import structlog
from aiosmtplib import SMTPStatus

from mailer.config import Settings
from mailer.transports.base import (
    OutgoingMessage,
    PermanentError,
    Ready,
    SendingPausedError,
    SendResult,
    ThrottledError,
    TransientError,
    TransportError,
)
from mailer.transports.dkim import DkimSigner
from mailer.transports.mime import PLAIN_ADDRESS, build_mime, split_address

log = structlog.get_logger(__name__)

COMMAND_TIMEOUT = 30.0
# SMTP_MAX_CONNECTIONS bounds the connections per transport (worker process), however high
# WORKER_CONCURRENCY is. Relays limit connections per client: postfix's
# smtpd_client_connection_count_limit is 50 and it answers more with 421; smtp-sink serves
# 256 and leaves the rest unanswered in its listen queue, where each waits COMMAND_TIMEOUT
# for a greeting. 50 connections carry several thousand messages/s to a nearby relay; more
# add event-loop work, not throughput.
DEFAULT_THROTTLE_DELAY = 1.0
_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    verify: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError("SMTP_URL must start with smtp://, smtp+starttls:// or smtps://")
        if not parts.hostname:
            raise ValueError("SMTP_URL has no host")
        query = parse_qs(parts.query)
        verify = query.get("verify", ["true"])[-1].lower() not in _FALSE
        return cls(
            host=parts.hostname,
            port=parts.port or _DEFAULT_PORTS[parts.scheme],
            implicit_tls=parts.scheme == "smtps",
            starttls=parts.scheme == "smtp+starttls",
            verify=verify,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


def classify_smtp_response(code: int, message: str) -> TransportError:
    text = f"SMTP {code} {message}".strip()
    if 400 <= code < 500:
        if "throttl" in message.lower():
            return ThrottledError(text, code=str(code), retry_after=DEFAULT_THROTTLE_DELAY)
        return TransientError(text, code=str(code))
    if code == 530:  # authentication required: the relay refuses everything we send
        return SendingPausedError(text, code=str(code))
    if 500 <= code < 600:
        return PermanentError(text, code=str(code))
    return TransientError(text, code=str(code))  # nonsense reply: treat as a glitch


class _StaleConnection(Exception):
    """A pooled connection turned out closed before anything was sent on it."""


class SmtpTransport:
    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        if settings.smtp_url is None:
            raise ValueError("SMTP_URL is required for the smtp transport")
        self.config = SmtpConfig.from_url(settings.smtp_url.get_secret_value())
        self._size = min(settings.worker_concurrency, settings.smtp_max_connections)
        self._dkim = DkimSigner.from_settings(settings)
        self._idle: list[aiosmtplib.SMTP] = []  # LIFO: the most recently used first
        self._slots: asyncio.Semaphore | None = None
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def start(self) -> None:
        self._closed = False
        if self._slots is not None:
            return
        self._slots = asyncio.Semaphore(self._size)
        if self.config.implicit_tls or self.config.starttls:
            self._tls = ssl.create_default_context()
            if not self.config.verify:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE
        elif self.config.username and self.config.host not in {"127.0.0.1", "::1", "localhost"}:
            log.warning("smtp_auth_without_tls", host=self.config.host)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await _quit(conn)

    async def max_send_rate(self) -> float | None:
        return None

    def render(self, message: OutgoingMessage) -> bytes:
        raw = build_mime(message)
        if self._dkim is not None:
            raw = self._dkim.sign(raw)
        return raw

    async def send(self, message: OutgoingMessage, ready: Ready | None = None) -> SendResult:
        if self._slots is None:
            raise RuntimeError("SmtpTransport.start() was not called")
        _, sender = split_address(message.from_addr, "From")
        _, recipient = split_address(message.to, "To")
        raw = self.render(message)
        async with self._slots:
            conn, reused = await self._checkout()
            if ready is not None:
                try:
                    await ready()
                except BaseException:
                    self._checkin(conn)
                    raise
            try:
                await self._transaction(conn, sender, recipient, raw, reused=reused)
            except _StaleConnection:
                conn, _ = await self._checkout(fresh=True)
                await self._transaction(conn, sender, recipient, raw, reused=False)
        return SendResult(provider_message_id=message.message_id.strip("<>"))

    async def _transaction(
        self, conn: aiosmtplib.SMTP, sender: str, recipient: str, raw: bytes, *, reused: bool
    ) -> None:
        """MAIL, RCPT, DATA on `conn`; puts `conn` back in the pool or closes it."""
        stage = "mail"
        try:
            await _mail(conn, sender)
            stage = "rcpt"
            await _rcpt(conn, recipient)
            stage = "data"
            await conn.data(raw)
        except aiosmtplib.SMTPServerDisconnected as exc:
            conn.close()
            if reused and stage == "mail":
                raise _StaleConnection from exc
            raise TransientError(f"SMTP connection lost: {exc}", code="disconnected") from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            conn.close()
            raise TransientError(f"SMTP timeout: {exc}", code="timeout") from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(conn)
            raise classify_smtp_response(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            conn.close()
            raise TransientError(f"SMTP error: {exc}", code="connection") from exc
        except BaseException:
            conn.close()  # cancelled mid-transaction: the connection state is unknown
            raise
        self._checkin(conn)

    async def _reset(self, conn: aiosmtplib.SMTP) -> None:
        """RSET after a refused transaction; keep the connection only if that works."""
        if not conn.is_connected:
            return
        try:
            await conn.rset()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, aiosmtplib.SMTPException | OSError):
                return
            raise
        self._checkin(conn)

    def _checkin(self, conn: aiosmtplib.SMTP) -> None:
        if self._closed:
            conn.close()
        elif conn.is_connected:
            self._idle.append(conn)

    async def _checkout(self, *, fresh: bool = False) -> tuple[aiosmtplib.SMTP, bool]:
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.is_connected:
                return conn, True
        return await self._connect(), False

    async def _connect(self) -> aiosmtplib.SMTP:
        cfg = self.config
        conn = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            use_tls=cfg.implicit_tls,
            start_tls=cfg.starttls,
            tls_context=self._tls,
            timeout=COMMAND_TIMEOUT,
        )
        try:
            await conn.connect()
            if cfg.username is not None:
                await conn.login(cfg.username, cfg.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            conn.close()
            raise SendingPausedError(
                f"SMTP authentication failed: {exc}", code=str(exc.code)
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise SendingPausedError(
                f"SMTP certificate rejected: {exc}", code="tls_verify"
            ) from exc
        except aiosmtplib.SMTPConnectResponseError as exc:
            conn.close()
            raise TransientError(f"SMTP greeting refused: {exc}", code=str(exc.code)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            conn.close()
            raise classify_smtp_response(exc.code, exc.message) from exc
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPServerDisconnected,
            OSError,
        ) as exc:
            conn.close()
            raise TransientError(f"SMTP connect failed: {exc}", code="connection") from exc
        except aiosmtplib.SMTPException as exc:
            # STARTTLS or AUTH required by SMTP_URL but not offered by the relay.
            conn.close()
            raise SendingPausedError(f"SMTP relay: {exc}", code="not_supported") from exc
        except BaseException:
            conn.close()
            raise
        return conn


async def _mail(conn: aiosmtplib.SMTP, sender: str) -> None:
    """conn.mail(sender), without aiosmtplib's address parsing for a plain address.

    `SMTP.mail`/`rcpt` run `email.utils.parseaddr` and a validation regex on the address
    (~7 µs each); for a bare dot-atom address (PLAIN_ADDRESS) both are the identity, so the
    same command line goes out through `execute_command`, with the same checks of the reply.
    EHLO (done by `mail` on a fresh connection) and any other address take aiosmtplib's path.
    """
    if conn.is_ehlo_or_helo_needed or not PLAIN_ADDRESS.fullmatch(sender):
        await conn.mail(sender)
        return
    response = await conn.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">")
    if response.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def _rcpt(conn: aiosmtplib.SMTP, recipient: str) -> None:
    """conn.rcpt(recipient); a plain address skips aiosmtplib's parsing (see _mail)."""
    if conn.is_ehlo_or_helo_needed or not PLAIN_ADDRESS.fullmatch(recipient):
        await conn.rcpt(recipient)
        return
    response = await conn.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
    if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


async def _quit(conn: aiosmtplib.SMTP) -> None:
    try:
        await asyncio.wait_for(conn.quit(), timeout=5)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        conn.close()
