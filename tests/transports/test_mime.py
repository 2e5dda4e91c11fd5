from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest

from mailer.transports.base import MailAttachment, PermanentError
from mailer.transports.dkim import DkimSigner, load_private_key
from mailer.transports.mime import build_mime
from tests.transports.helpers import (
    HTML,
    SUBJECT,
    TEXT,
    UNSUB_URL,
    DkimKey,
    crlf_to_lf,
    make_message,
)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_multipart_alternative_round_trips_through_the_stdlib_parser() -> None:
    message = make_message(reply_to=("a@example.com", '"Doe, Jane" <jane@example.com>'))
    date = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    raw = build_mime(message, date=date)
    parsed = parse(raw)

    assert parsed["Subject"] == SUBJECT
    assert parsed["From"] == "Mailer Tëst <sender@example.com>"
    assert parsed["From"].addresses[0].addr_spec == "sender@example.com"
    assert parsed["To"] == "rcpt@example.com"
    assert [a.addr_spec for a in parsed["Reply-To"].addresses] == [
        "a@example.com",
        "jane@example.com",
    ]
    assert parsed["Reply-To"].addresses[1].display_name == "Doe, Jane"
    assert parsed["Message-ID"] == message.message_id
    assert parsed["Date"].datetime == date
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["List-Unsubscribe"] == f"<{UNSUB_URL}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-SES-MESSAGE-TAGS"] == "batch=b-1, campaign=spring"
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert crlf_to_lf(text.get_content()) == TEXT
    assert crlf_to_lf(html.get_content()) == HTML
    assert not parsed.defects


def test_output_is_7bit_crlf_with_encoded_words() -> None:
    raw = build_mime(make_message(text="x" * 2000 + "\n" + "é" * 500))
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    head = raw.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "\n")
    assert "Grüße" not in head
    assert re.search(r"^Subject: =\?utf-8\?", head, re.M)
    assert re.search(r"^From: =\?utf-8\?[bq]\?[^?]+\?= <sender@example.com>$", head, re.M)
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    part = next(parse(raw).iter_parts())
    assert crlf_to_lf(part.get_content()) == "x" * 2000 + "\n" + "é" * 500


@pytest.mark.parametrize(
    ("html", "text", "ctype"), [(None, TEXT, "text/plain"), (HTML, None, "text/html")]
)
def test_single_part(html: str | None, text: str | None, ctype: str) -> None:
    parsed = parse(build_mime(make_message(html=html, text=text, tags={})))
    assert parsed.get_content_type() == ctype
    assert crlf_to_lf(parsed.get_content()) == (html or text)
    assert "X-SES-MESSAGE-TAGS" not in parsed


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "nul\x00byte"},
        {"subject": "tab\there"},
        {"to": "rcpt@example.com\nBcc: victim@example.com"},
        {"from_addr": "Evil\r\n <sender@example.com>"},
        {"reply_to": ("ok@example.com", "x@example.com\rBcc: v@example.com")},
        {"headers": {"List-Unsubscribe": "<https://x>\r\nBcc: v@example.com"}},
        {"headers": {"X-Bad:Name": "v"}},
        {"headers": {"Bcc": "victim@example.com"}},
        {"headers": {"Content-Type": "text/html"}},
        {"message_id": "<no-at-sign>"},
        {"to": "not-an-address"},
        {"to": "jürgen@example.com"},
        {"html": None, "text": None},
        {"headers": {"X-Long": "a" * 1000}},
    ],
)
def test_bad_header_data_is_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(PermanentError):
        build_mime(make_message(**overrides))


def _sign(key: DkimKey, raw: bytes) -> bytes:
    signer = DkimSigner(load_private_key(key.pem), key.selector, None)
    return signer.sign(raw)


def test_dkim_signature_verifies_and_covers_list_unsubscribe() -> None:
    key = DkimKey()
    signed = _sign(key, build_mime(make_message()))
    assert dkim.verify(signed, dnsfunc=key.dnsfunc)
    assert key.lookups == [b"sel1._domainkey.example.com."]
    header = parse(signed)["DKIM-Signature"]
    tags = dict(part.strip().split("=", 1) for part in str(header).split(";") if "=" in part)
    signed_names = tags["h"].replace(" ", "").split(":")
    for name in ("from", "to", "subject", "date", "message-id", "list-unsubscribe"):
        assert name in signed_names
    assert "list-unsubscribe-post" in signed_names
    assert tags["d"] == "example.com"
    assert tags["s"] == "sel1"
    assert tags["c"] == "relaxed/relaxed"

    tampered = signed.replace(UNSUB_URL.encode(), b"https://evil.test/u/tok123")
    assert tampered != signed
    assert not dkim.verify(tampered, dnsfunc=key.dnsfunc)
    body_tampered = signed.replace(b"this is the html part.", b"this is the evil part.")
    assert not dkim.verify(body_tampered, dnsfunc=key.dnsfunc)
    # Over-signing: a second List-Unsubscribe-Post or From added later breaks the signature.
    added = signed.replace(b"MIME-Version: 1.0\r\n", b"MIME-Version: 1.0\r\nFrom: x@evil.test\r\n")
    assert not dkim.verify(added, dnsfunc=key.dnsfunc)


def test_dkim_domain_setting_and_key_forms(tmp_path: Path) -> None:
    key = DkimKey(domain="mail.example.net")
    key_file = tmp_path / "dkim.pem"
    key_file.write_text(key.pem)
    from_file = DkimSigner(load_private_key(str(key_file)), key.selector, "mail.example.net")
    escaped = DkimSigner(load_private_key(key.pem.replace("\n", "\\n")), key.selector, None)
    raw = build_mime(make_message())
    assert dkim.verify(from_file.sign(raw), dnsfunc=key.dnsfunc)
    assert b"d=mail.example.net;" in from_file.sign(raw)
    # Without DKIM_DOMAIN the From domain is used; this DNS has no key for it.
    assert b"d=example.com;" in escaped.sign(raw)
    assert not dkim.verify(escaped.sign(raw), dnsfunc=key.dnsfunc)


def test_tags_header_is_sanitised() -> None:
    raw = build_mime(make_message(tags={"a b": "x=y, z", "empty": "", "ok": "1"}))
    assert parse(raw)["X-SES-MESSAGE-TAGS"] == "a_b=x_y__z, ok=1"


@pytest.mark.parametrize(("html", "text"), [(HTML, TEXT), (HTML, None), (None, TEXT)])
def test_attachments_make_multipart_mixed_and_sign(html: str | None, text: str | None) -> None:
    files = (
        MailAttachment("report.pdf", "application/pdf", bytes(range(256)) * 40),
        MailAttachment("été.txt", "text/plain", "é\n".encode()),
    )
    raw = build_mime(make_message(html=html, text=text, attachments=files))
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = parse(raw)
    assert parsed.get_content_type() == "multipart/mixed"
    body = parsed.get_body(("html", "plain"))
    assert body is not None
    assert body.get_content_type() == ("text/html" if html is not None else "text/plain")
    got = [
        (p.get_filename(), p.get_content_type(), p.get_payload(decode=True))
        for p in parsed.iter_attachments()
    ]
    assert got == [(f.filename, f.content_type, f.content) for f in files]
    key = DkimKey()
    assert dkim.verify(_sign(key, raw), dnsfunc=key.dnsfunc)


@pytest.mark.parametrize(
    "bad",
    [
        MailAttachment('a"b.txt', "text/plain", b"x"),
        MailAttachment("a\r\nb.txt", "text/plain", b"x"),
        MailAttachment("a.txt", "text/plain; x=\r\ny", b"x"),
    ],
)
def test_bad_attachments_are_permanent_errors(bad: MailAttachment) -> None:
    with pytest.raises(PermanentError):
        build_mime(make_message(attachments=(bad,)))
