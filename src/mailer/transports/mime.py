"""MIME for the smtp and outbox transports (DKIM signing is in `transports/dkim.py`).

The message is assembled by hand from C-speed encoders (binascii QP, RFC 2047 through
email.header) instead of `email.message`: measured here, EmailMessage takes ~3.3 ms and
compat32 `email.mime` ~1.7 ms per newsletter-sized message, this ~0.1 ms. The output is
plain RFC 5322/2045 with CRLF line endings; tests parse it back with the stdlib parser.

Addresses: `email.utils.parseaddr` costs ~8 µs a call (~14 % of the SMTP send path when it
ran five times per message). A bare dot-atom address (what ingest stores) is its own
parse result and formats to itself, so it skips the parser; other forms (display names,
quoted local parts, comments, angle brackets) take the full path, whose result is cached
because a batch's From and Reply-To are the same few values. The Date header is formatted
once per second.

Header values and display names may not contain control characters (the definition and
its reasons are in `mailer/control_chars.py`).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from urllib.parse import quote

from mailer.control_chars import CONTROL_CHARS
from mailer.transports.base import MailAttachment, OutgoingMessage, PermanentError

_HEADER_NAME = re.compile(r"[!-9;-~]{1,126}")  # printable ASCII except ':'
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")
_MAX_LINE = 998
# type/subtype of RFC 2045 tokens, no parameters.
CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,100}/[A-Za-z0-9!#$&^_.+-]{1,100}")
# A bare dot-atom address (RFC 5322 atext, ASCII domain labels): parseaddr returns it
# unchanged with no display name, so it needs no parsing and formats to itself. No
# whitespace, controls, quotes or angle brackets can match, so it is also safe as is on an
# SMTP command line.
PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
# Headers build_mime writes itself; message.headers may not override them.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "dkim-signature",
        "x-ses-message-tags",
    }
)


def check_header_value(name: str, value: str) -> None:
    """Raise PermanentError if a header value contains a control character (CR, LF, TAB,
    NUL, C1, U+2028/U+2029: see mailer/control_chars.py)."""
    if CONTROL_CHARS.search(value):
        raise PermanentError(f"control character in header {name}", code="invalid_header")


def check_header_name(name: str) -> None:
    if not _HEADER_NAME.fullmatch(name):
        raise PermanentError(f"invalid header name {name!r}", code="invalid_header")


def split_address(value: str, field: str) -> tuple[str, str]:
    """'Name <a@b>' or 'a@b' -> (name, addr); the address must be ASCII (no SMTPUTF8)."""
    if PLAIN_ADDRESS.fullmatch(value):
        return "", value
    return _split_parsed(value, field)


@lru_cache(maxsize=1024)
def _split_parsed(value: str, field: str) -> tuple[str, str]:
    check_header_value(field, value)
    name, addr = parseaddr(value)
    if "@" not in addr or not addr.isascii() or " " in addr:
        raise PermanentError(f"invalid {field} address", code="invalid_address")
    return name, addr


def format_address(value: str, field: str) -> str:
    if PLAIN_ADDRESS.fullmatch(value):
        return value
    return _format_parsed(value, field)


@lru_cache(maxsize=1024)
def _format_parsed(value: str, field: str) -> str:
    name, addr = _split_parsed(value, field)
    if not name:
        return addr
    # formataddr quotes specials and RFC 2047-encodes a non-ASCII display name.
    return formataddr((name, addr), charset="utf-8")


@lru_cache(maxsize=256)
def _reply_to_header(values: tuple[str, ...]) -> str:
    return ", ".join(format_address(addr, "Reply-To") for addr in values)


_date_cache: tuple[int, str] = (-1, "")


def _date_now() -> str:
    """format_datetime(datetime.now(UTC)) (it has whole seconds), formatted once a second."""
    global _date_cache
    now, cached = int(time.time()), _date_cache
    if cached[0] != now:
        cached = _date_cache = (now, format_datetime(datetime.fromtimestamp(now, UTC)))
    return cached[1]


def encode_text_header(value: str) -> str:
    """An unstructured header value: as is when ASCII, else RFC 2047 encoded words."""
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n", maxlinelen=76)


def _qp_body(text: str) -> bytes:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.replace("\n", "\r\n").encode()
    encoded = binascii.b2a_qp(data, istext=True)
    # b2a_qp picks its line ending from the first one it sees; normalise anyway.
    if b"\r\n" not in encoded:
        encoded = encoded.replace(b"\n", b"\r\n")
    return encoded


def _part(subtype: str, body: str) -> bytes:
    return (
        f"Content-Type: text/{subtype}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode() + _qp_body(body)


_TAG_INVALID = re.compile(r"[^A-Za-z0-9_-]")


def clean_tags(tags: Mapping[str, str]) -> list[tuple[str, str]]:
    """Tag names and values limited to [A-Za-z0-9_-], 256 characters; empty ones dropped."""
    out: list[tuple[str, str]] = []
    for name, value in tags.items():
        clean_name = _TAG_INVALID.sub("_", name)[:256]
        clean_value = _TAG_INVALID.sub("_", value)[:256]
        if clean_name and clean_value:
            out.append((clean_name, clean_value))
    return out


_CLEAN_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _tags_header(tags: Mapping[str, str]) -> str:
    match = _CLEAN_TAG.fullmatch
    if all(match(name) and match(value) for name, value in tags.items()):
        return ", ".join(f"{name}={value}" for name, value in tags.items())  # the usual
    return ", ".join(f"{name}={value}" for name, value in clean_tags(tags))


def build_mime(message: OutgoingMessage, *, date: datetime | None = None) -> bytes:
    """Render `message` as RFC 5322 bytes (CRLF). Raises PermanentError on bad header data."""
    if message.html is None and message.text is None:
        raise PermanentError("message has neither text nor html", code="invalid_content")
    check_header_value("Message-ID", message.message_id)
    if not _MESSAGE_ID.fullmatch(message.message_id):
        raise PermanentError("invalid Message-ID", code="invalid_header")
    check_header_value("Subject", message.subject)

    lines = [
        f"From: {format_address(message.from_addr, 'From')}",
        f"To: {format_address(message.to, 'To')}",
        f"Subject: {encode_text_header(message.subject)}",
        f"Date: {_date_now() if date is None else format_datetime(date)}",
        f"Message-ID: {message.message_id}",
    ]
    if message.reply_to:
        lines.append(f"Reply-To: {_reply_to_header(tuple(message.reply_to))}")
    lines.append("MIME-Version: 1.0")
    for name, value in message.headers.items():
        check_header_name(name)
        check_header_value(name, value)
        if name.lower() in RESERVED_HEADERS:
            raise PermanentError(f"header {name} cannot be overridden", code="invalid_header")
        lines.append(f"{name}: {encode_text_header(value)}")
    tags = _tags_header(message.tags)
    if tags:  # read (and removed) by SES's SMTP interface; harmless elsewhere
        lines.append(f"X-SES-MESSAGE-TAGS: {tags}")
    if max(map(len, lines)) > _MAX_LINE:
        raise PermanentError("header line longer than 998 characters", code="invalid_header")

    body = _body(message)
    if message.attachments:
        body = _with_attachments(body, message.attachments)
    head = ("\r\n".join(lines) + "\r\n").encode()
    raw = head + body
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def _body(message: OutgoingMessage) -> bytes:
    """The body entity: its Content-Type and Content-Transfer-Encoding lines, a blank line,
    the content."""
    if message.html is not None and message.text is not None:
        boundary = "=_" + secrets.token_hex(12)  # "=_" can never occur in QP output
        # The CRLF before each delimiter belongs to the delimiter, not to the part.
        return b"".join(
            (
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode(),
                f"--{boundary}\r\n".encode(),
                _part("plain", message.text),
                f"\r\n--{boundary}\r\n".encode(),
                _part("html", message.html),
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
    subtype, body = ("html", message.html) if message.html is not None else ("plain", message.text)
    assert body is not None
    return _part(subtype, body)


def _filename_params(filename: str) -> str:
    """`filename="…"` for ASCII names, RFC 2231 `filename*=utf-8''…` otherwise."""
    if filename.isascii():
        return f'filename="{filename}"'
    return "filename*=utf-8''" + quote(filename, safe="")


def _with_attachments(body: bytes, attachments: tuple[MailAttachment, ...]) -> bytes:
    """multipart/mixed: the body entity first, then each attachment in base64."""
    boundary = "=_" + secrets.token_hex(12)  # base64 has no "=_" either
    parts = [f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()]
    parts.append(f"--{boundary}\r\n".encode())
    parts.append(body if body.endswith(b"\r\n") else body + b"\r\n")
    for item in attachments:
        check_header_value("attachment filename", item.filename)
        if not CONTENT_TYPE.fullmatch(item.content_type) or '"' in item.filename:
            raise PermanentError("invalid attachment", code="invalid_attachment")
        params = _filename_params(item.filename)
        encoded = base64.encodebytes(item.content).replace(b"\n", b"\r\n")
        parts.append(
            (
                f"--{boundary}\r\n"
                f"Content-Type: {item.content_type}\r\n"
                f"Content-Disposition: attachment; {params}\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n"
            ).encode()
        )
        parts.append(encoded)
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)
