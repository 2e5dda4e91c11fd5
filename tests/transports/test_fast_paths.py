"""The SMTP send path's shortcuts give the same results as the full path they bypass.

- mime.split_address / format_address skip `email.utils.parseaddr` for a bare dot-atom
  address and cache the parsed result of any other form;
- build_mime formats the Date header once a second and writes a batch's Reply-To once;
- the DKIM relaxed body canonicalization works on the whole body at once;
- smtp._mail / _rcpt send MAIL and RCPT for a plain address without aiosmtplib's parser;
- the SMTP pool holds at most SMTP_MAX_CONNECTIONS connections.

The expected messages below were produced by build_mime before these shortcuts existed.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import pytest
from aiosmtplib.email import quote_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.transports import smtp
from mailer.transports.base import OutgoingMessage, PermanentError
from mailer.transports.dkim import DkimSigner, _relaxed_body, load_private_key
from mailer.transports.mime import PLAIN_ADDRESS, build_mime, format_address, split_address
from mailer.transports.smtp import SmtpTransport
from tests.fixtures.smtp_server import SmtpTestServer
from tests.transports.helpers import DkimKey, make_message, make_settings

DATE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BOUNDARY = "0123456789abcdef01234567"


def _message(**overrides: Any) -> OutgoingMessage:
    values: dict[str, Any] = {
        "message_id": "<golden-1@mailer.test>",
        "from_addr": "sender@example.com",
        "to": "rcpt@example.com",
        "subject": "Hello",
        "html": "<p>Hi</p>\n",
        "text": "Hi\n",
    }
    values.update(overrides)
    return OutgoingMessage(**values)


GOLDEN = {
    "display_names": (
        _message(
            from_addr='"Doe, Jane" <jane@example.com>',
            to="Jürgen Müller <juergen@example.com>",
            reply_to=(
                '"john..doe"@example.com',
                "user@example.com (Support)",
                "Mailer Tëst <s@example.com>",
            ),
            subject="Grüße ✓",
            headers={
                "List-Unsubscribe": "<https://mailer.test/u/tok>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
            tags={"batch": "b-1", "a b": "x=y"},
        ),
        b'From: "Doe, Jane" <jane@example.com>\r\n'
        b"To: =?utf-8?b?SsO8cmdlbiBNw7xsbGVy?= <juergen@example.com>\r\n"
        b"Subject: =?utf-8?b?R3LDvMOfZSDinJM=?=\r\n"
        b"Date: Wed, 01 May 2024 12:00:00 +0000\r\n"
        b"Message-ID: <golden-1@mailer.test>\r\n"
        b'Reply-To: "john..doe"@example.com, Support <user@example.com>, '
        b"=?utf-8?q?Mailer_T=C3=ABst?= <s@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"List-Unsubscribe: <https://mailer.test/u/tok>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"X-SES-MESSAGE-TAGS: batch=b-1, a_b=x_y\r\n"
        b'Content-Type: multipart/alternative; boundary="=_0123456789abcdef01234567"\r\n'
        b"\r\n"
        b"--=_0123456789abcdef01234567\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"Hi\r\n"
        b"\r\n--=_0123456789abcdef01234567\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"<p>Hi</p>\r\n"
        b"\r\n--=_0123456789abcdef01234567--\r\n",
    ),
    "quoted_local_part_idn": (
        _message(
            from_addr="Mailer Tëst <sender@example.com>",
            to='"john.doe"@xn--mnchen-3ya.de',
            html=None,
            reply_to=("<angle@example.com>",),
            tags={"mailer_batch": "01abc", "mailer_recipient": "7"},
        ),
        b"From: =?utf-8?q?Mailer_T=C3=ABst?= <sender@example.com>\r\n"
        b'To: "john.doe"@xn--mnchen-3ya.de\r\n'
        b"Subject: Hello\r\n"
        b"Date: Wed, 01 May 2024 12:00:00 +0000\r\n"
        b"Message-ID: <golden-1@mailer.test>\r\n"
        b"Reply-To: angle@example.com\r\n"
        b"MIME-Version: 1.0\r\n"
        b"X-SES-MESSAGE-TAGS: mailer_batch=01abc, mailer_recipient=7\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"Hi\r\n",
    ),
    "plain": (
        _message(to="User.Name+tag@Sub.Example-Domain.COM", text=None, headers={"X-Note": "café"}),
        b"From: sender@example.com\r\n"
        b"To: User.Name+tag@Sub.Example-Domain.COM\r\n"
        b"Subject: Hello\r\n"
        b"Date: Wed, 01 May 2024 12:00:00 +0000\r\n"
        b"Message-ID: <golden-1@mailer.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"X-Note: =?utf-8?b?Y2Fmw6k=?=\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"<p>Hi</p>\r\n",
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_build_mime_bytes_are_unchanged(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: BOUNDARY)
    message, expected = GOLDEN[name]
    assert build_mime(message, date=DATE) == expected
    assert build_mime(message, date=DATE) == expected  # and again, from the caches


@settings(max_examples=500, suppress_health_check=list(HealthCheck))
@given(st.from_regex(PLAIN_ADDRESS, fullmatch=True))
def test_a_plain_address_is_its_own_parse_result(address: str) -> None:
    # What the shortcuts assume: parseaddr, formataddr and aiosmtplib's quoting leave it as is.
    assert email.utils.parseaddr(address) == ("", address)
    assert split_address(address, "To") == ("", address)
    assert format_address(address, "To") == address
    assert quote_address(address) == f"<{address}>"


@pytest.mark.parametrize(
    ("value", "name", "addr"),
    [
        ('"Doe, Jane" <jane@example.com>', "Doe, Jane", "jane@example.com"),
        ("Jürgen Müller <juergen@example.com>", "Jürgen Müller", "juergen@example.com"),
        ('"john..doe"@example.com', "", '"john..doe"@example.com'),
        ('"john doe"@example.com', None, None),  # space in the address: refused as before
        ("user@example.com (Support)", "Support", "user@example.com"),
        ("<angle@example.com>", "", "angle@example.com"),
        ("user@münchen.de", None, None),  # IDN not yet IDNA-encoded: no SMTPUTF8
        ("jürgen@example.com", None, None),
        ("rcpt@example.com\r\nBcc: x@example.com", None, None),
        ("no-at-sign", None, None),
    ],
)
def test_other_address_forms_take_the_full_path(value: str, name: str, addr: str) -> None:
    assert PLAIN_ADDRESS.fullmatch(value) is None  # (an IDNA-encoded domain is plain)
    for _ in range(2):  # the second time from the cache, errors included
        if addr is None:
            with pytest.raises(PermanentError) as info:
                split_address(value, "To")
            assert info.value.code in {"invalid_address", "invalid_header"}
            with pytest.raises(PermanentError):
                format_address(value, "To")
        else:
            assert split_address(value, "To") == (name, addr)
            assert email.utils.parseaddr(value) == (name, addr)


def test_the_date_header_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1714564800.75]
    monkeypatch.setattr(time, "time", lambda: clock[0])

    def date_of() -> str:
        raw = build_mime(make_message())
        found = re.search(rb"^Date: (.*)\r$", raw, re.M)
        assert found
        return found.group(1).decode()

    assert date_of() == "Wed, 01 May 2024 12:00:00 +0000"
    clock[0] = 1714564800.99
    assert date_of() == "Wed, 01 May 2024 12:00:00 +0000"
    clock[0] = 1714564801.01
    assert date_of() == "Wed, 01 May 2024 12:00:01 +0000"
    clock[0] = 1714651199.5
    assert date_of() == "Thu, 02 May 2024 11:59:59 +0000"


def _relaxed_body_by_line(body: bytes) -> bytes:
    """RFC 6376 3.4.4 spelled out line by line (the previous implementation)."""
    lines = body.split(b"\r\n")
    out = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in lines]
    while out and out[-1] == b"":
        out.pop()
    return b"".join(line + b"\r\n" for line in out)


_BODY_PIECES = [b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b"a", b"b.", b" \t \r\n", b"=\r\n"]


@settings(max_examples=1000, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.binary(max_size=80), st.lists(st.sampled_from(_BODY_PIECES), max_size=40).map(b"".join)
    )
)
def test_relaxed_body_matches_the_line_by_line_rule(body: bytes) -> None:
    assert _relaxed_body(body) == _relaxed_body_by_line(body)


def test_dkim_with_whitespace_in_the_body_verifies() -> None:
    key = DkimKey()
    signer = DkimSigner(load_private_key(key.pem), key.selector, None)
    text = "a  b\t c   \n\tindented\n  \n\n\n"
    for message in (make_message(text=text, html=None), make_message(text=text)):
        signed = signer.sign(build_mime(message))
        assert dkim.verify(signed, dnsfunc=key.dnsfunc)
        assert not dkim.verify(signed.replace(b"indented", b"indentex"), dnsfunc=key.dnsfunc)


# SMTP


@dataclass
class _Calls:
    mail: int = 0
    rcpt: int = 0


@pytest.fixture
def aiosmtplib_calls(monkeypatch: pytest.MonkeyPatch) -> _Calls:
    """Counts calls of aiosmtplib's own SMTP.mail / SMTP.rcpt (the full path)."""
    calls = _Calls()
    real_mail, real_rcpt = aiosmtplib.SMTP.mail, aiosmtplib.SMTP.rcpt

    async def mail(self: aiosmtplib.SMTP, sender: str, /, **kwargs: Any) -> Any:
        calls.mail += 1
        return await real_mail(self, sender, **kwargs)

    async def rcpt(self: aiosmtplib.SMTP, recipient: str, /, **kwargs: Any) -> Any:
        calls.rcpt += 1
        return await real_rcpt(self, recipient, **kwargs)

    monkeypatch.setattr(aiosmtplib.SMTP, "mail", mail)
    monkeypatch.setattr(aiosmtplib.SMTP, "rcpt", rcpt)
    return calls


async def _send_all(tmp_path: Path, url: str, messages: list[OutgoingMessage]) -> None:
    t = SmtpTransport(make_settings(tmp_path, mail_transport="smtp", smtp_url=url))
    await t.start()
    try:
        for message in messages:
            await t.send(message)
    finally:
        await t.close()


async def test_plain_envelope_addresses_skip_aiosmtplib_parsing(
    tmp_path: Path, aiosmtplib_calls: _Calls
) -> None:
    with SmtpTestServer() as srv:
        await _send_all(
            tmp_path,
            srv.url(),
            [
                make_message(f"r{i}@example.com", from_addr="Bench <bench@example.com>")
                for i in range(3)
            ],
        )
        assert [(m.mail_from, m.rcpt_tos) for m in srv.messages] == [
            ("bench@example.com", [f"r{i}@example.com"]) for i in range(3)
        ]
        assert srv.connections == 1
    # Only the first MAIL of the connection goes through SMTP.mail (it sends EHLO).
    assert (aiosmtplib_calls.mail, aiosmtplib_calls.rcpt) == (1, 0)


async def test_other_envelope_addresses_take_aiosmtplib_path(
    tmp_path: Path, aiosmtplib_calls: _Calls
) -> None:
    with SmtpTestServer() as srv:
        await _send_all(
            tmp_path,
            srv.url(),
            [
                make_message("x@example.com"),  # plain: the fast path
                make_message('"john..doe"@example.com', from_addr='"Doe, Jane" <jane@example.com>'),
                make_message("Jürgen <juergen@xn--mnchen-3ya.de>", from_addr="sender@example.com"),
            ],
        )
        assert [(m.mail_from, m.rcpt_tos) for m in srv.messages] == [
            ("sender@example.com", ["x@example.com"]),
            ("jane@example.com", ["john..doe@example.com"]),  # as aiosmtpd reports it
            ("sender@example.com", ["juergen@xn--mnchen-3ya.de"]),
        ]
        parsed = srv.messages[2].parsed()
        assert parsed["To"].addresses[0].display_name == "Jürgen"
    # MAIL: EHLO on the first message; RCPT: the quoted local part only. Display names are
    # parsed by split_address, whose address part is plain again.
    assert (aiosmtplib_calls.mail, aiosmtplib_calls.rcpt) == (1, 1)


class _FakeConnection:
    """Stands in for aiosmtplib.SMTP after EHLO, answering every command with one reply."""

    is_ehlo_or_helo_needed = False

    def __init__(self, code: int, message: str) -> None:
        self.reply = aiosmtplib.SMTPResponse(code, message)
        self.commands: list[tuple[bytes, ...]] = []

    async def execute_command(self, *args: bytes) -> aiosmtplib.SMTPResponse:
        self.commands.append(args)
        return self.reply


async def test_fast_path_replies_are_checked_like_aiosmtplib() -> None:
    ok = _FakeConnection(250, "ok")
    await smtp._mail(ok, "a@example.com")  # type: ignore[arg-type]
    await smtp._rcpt(ok, "b@example.com")  # type: ignore[arg-type]
    await smtp._rcpt(_FakeConnection(251, "will forward"), "c@example.com")  # type: ignore[arg-type]
    assert ok.commands == [(b"MAIL", b"FROM:<a@example.com>"), (b"RCPT", b"TO:<b@example.com>")]

    with pytest.raises(aiosmtplib.SMTPSenderRefused) as sender:
        await smtp._mail(_FakeConnection(553, "bad sender"), "a@example.com")  # type: ignore[arg-type]
    assert (sender.value.code, sender.value.sender) == (553, "a@example.com")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as rcpt:
        await smtp._rcpt(_FakeConnection(550, "no such user"), "b@example.com")  # type: ignore[arg-type]
    assert (rcpt.value.code, rcpt.value.recipient) == (550, "b@example.com")
    assert isinstance(smtp.classify_smtp_response(553, "bad sender"), PermanentError)


async def test_connections_are_capped(tmp_path: Path) -> None:
    with SmtpTestServer() as srv:
        settings_ = make_settings(
            tmp_path,
            mail_transport="smtp",
            smtp_url=srv.url(),
            worker_concurrency=50,
            smtp_max_connections=4,
        )
        t = SmtpTransport(settings_)
        await t.start()
        try:
            await asyncio.gather(*(t.send(make_message(f"r{i}@example.com")) for i in range(40)))
        finally:
            await t.close()
        assert len(srv.messages) == 40
        assert 1 < srv.connections <= 4
