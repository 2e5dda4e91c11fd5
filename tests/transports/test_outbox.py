from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest

from mailer.transports import Transport, build_transport
from mailer.transports.base import PermanentError
from mailer.transports.outbox import OutboxTransport, outbox_filename
from mailer.transports.ses import SesTransport
from mailer.transports.smtp import SmtpTransport
from tests.transports.helpers import (
    HTML,
    SUBJECT,
    TEXT,
    UNSUB_URL,
    DkimKey,
    crlf_to_lf,
    make_message,
    make_settings,
)


def parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_writes_one_eml_per_message(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "outbox"
    transport = OutboxTransport(make_settings(tmp_path, outbox_dir=directory))
    await transport.start()
    assert directory.is_dir()
    message = make_message("reader@example.com")
    result = await transport.send(message)
    await transport.close()

    assert result.provider_message_id == message.message_id.strip("<>")
    files = list(directory.iterdir())
    assert files == [directory / f"{result.provider_message_id}.eml"]
    parsed = parse(files[0])
    assert parsed["To"] == "reader@example.com"
    assert parsed["Subject"] == SUBJECT
    assert parsed["Message-ID"] == message.message_id
    assert parsed["Reply-To"] == "support@example.com"
    assert parsed["List-Unsubscribe"] == f"<{UNSUB_URL}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = parsed.iter_parts()
    assert crlf_to_lf(text.get_content()) == TEXT
    assert crlf_to_lf(html.get_content()) == HTML


async def test_concurrent_sends_leave_no_temporary_files(tmp_path: Path) -> None:
    transport = OutboxTransport(make_settings(tmp_path))
    await transport.start()
    messages = [make_message(f"r{i}@example.com") for i in range(40)]
    await asyncio.gather(*(transport.send(m) for m in messages))
    names = sorted(p.name for p in transport.directory.iterdir())
    assert names == sorted(outbox_filename(m.message_id) for m in messages)
    for message in messages:
        assert parse(transport.path_for(message.message_id))["To"] == message.to


async def test_directory_removed_while_running_is_recreated(tmp_path: Path) -> None:
    transport = OutboxTransport(make_settings(tmp_path))
    await transport.start()
    transport.directory.rmdir()
    message = make_message()
    await transport.send(message)
    assert transport.path_for(message.message_id).exists()


async def test_bad_message_writes_nothing(tmp_path: Path) -> None:
    transport = OutboxTransport(make_settings(tmp_path))
    await transport.start()
    with pytest.raises(PermanentError):
        await transport.send(make_message(subject="x\r\nBcc: victim@example.com"))
    assert list(transport.directory.iterdir()) == []


async def test_dkim_signed_outbox_message_verifies(tmp_path: Path) -> None:
    key = DkimKey(domain="mailer.test")
    transport = OutboxTransport(
        make_settings(tmp_path, dkim_domain="mailer.test", **key.settings())
    )
    await transport.start()
    message = make_message()
    await transport.send(message)
    raw = transport.path_for(message.message_id).read_bytes()
    assert dkim.verify(raw, dnsfunc=key.dnsfunc)
    assert key.lookups == [b"sel1._domainkey.mailer.test."]


def test_filename_is_safe() -> None:
    assert outbox_filename("<a.b+c@example.com>") == "a.b+c@example.com.eml"
    assert outbox_filename("<../../etc/passwd@x>") == "_.._etc_passwd@x.eml"
    assert "/" not in outbox_filename("<a/b@c>")


@pytest.mark.parametrize(
    ("name", "extra", "cls"),
    [
        ("outbox", {}, OutboxTransport),
        ("smtp", {"smtp_url": "smtp://127.0.0.1:2525"}, SmtpTransport),
        ("ses", {}, SesTransport),
    ],
)
def test_build_transport(tmp_path: Path, name: str, extra: dict[str, str], cls: type) -> None:
    transport = build_transport(make_settings(tmp_path, mail_transport=name, **extra))
    assert type(transport) is cls
    assert transport.name == name
    assert isinstance(transport, Transport)
