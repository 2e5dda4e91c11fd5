from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest

from mailer.transports.base import (
    PermanentError,
    SendingPausedError,
    ThrottledError,
    TransientError,
)
from mailer.transports.smtp import SmtpConfig, SmtpTransport
from tests.fixtures.smtp_server import SmtpTestServer, TlsFiles, make_tls_files
from tests.transports.helpers import (
    HTML,
    SUBJECT,
    TEXT,
    UNSUB_URL,
    DkimKey,
    crlf_to_lf,
    make_message,
)
from tests.transports.helpers import make_settings as _make_settings

GOOD = "good@example.com"
TEMP = "temp@example.com"
GONE = "gone@example.com"
SLOW = "slow@example.com"


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    policy = {TEMP: 451, GONE: 550, SLOW: 454, "busy@example.com": 450}
    with SmtpTestServer(rcpt_policy=policy) as srv:
        yield srv


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def transport(server: SmtpTestServer, tmp_path: Path) -> AsyncIterator[SmtpTransport]:
    t = SmtpTransport(_make_settings(tmp_path, mail_transport="smtp", smtp_url=server.url()))
    await t.start()
    yield t
    await t.close()


async def _transport(tmp_path: Path, url: str, **overrides: Any) -> SmtpTransport:
    settings = _make_settings(tmp_path, mail_transport="smtp", smtp_url=url, **overrides)
    t = SmtpTransport(settings)
    await t.start()
    return t


async def test_send_delivers_the_full_message(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    message = make_message(GOOD)
    result = await transport.send(message)

    assert result.provider_message_id == message.message_id.strip("<>")
    [received] = server.messages
    assert received.mail_from == "sender@example.com"
    assert received.rcpt_tos == [GOOD]
    parsed = received.parsed()
    assert parsed["Subject"] == SUBJECT
    assert parsed["From"] == "Mailer Tëst <sender@example.com>"
    assert parsed["To"] == GOOD
    assert parsed["Reply-To"] == "support@example.com"
    assert parsed["Message-ID"] == message.message_id
    assert parsed["List-Unsubscribe"] == f"<{UNSUB_URL}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = parsed.iter_parts()
    assert crlf_to_lf(text.get_content()) == TEXT
    assert crlf_to_lf(html.get_content()) == HTML


async def test_connections_are_reused(server: SmtpTestServer, tmp_path: Path) -> None:
    t = await _transport(tmp_path, server.url(), worker_concurrency=3)
    try:
        for _ in range(5):
            await t.send(make_message(GOOD))
        assert server.connections == 1
        await asyncio.gather(*(t.send(make_message(f"r{i}@example.com")) for i in range(30)))
    finally:
        await t.close()
    assert len(server.messages) == 35
    assert 1 < server.connections <= 3
    assert {m.rcpt_tos[0] for m in server.messages} >= {f"r{i}@example.com" for i in range(30)}


@pytest.mark.parametrize(
    ("address", "error", "code"),
    [
        (TEMP, TransientError, "451"),
        ("busy@example.com", TransientError, "450"),
        (GONE, PermanentError, "550"),
        (SLOW, ThrottledError, "454"),
    ],
)
async def test_recipient_replies_are_classified(
    server: SmtpTestServer,
    transport: SmtpTransport,
    address: str,
    error: type[Exception],
    code: str,
) -> None:
    with pytest.raises(error) as info:
        await transport.send(make_message(address))
    assert info.type is error
    assert getattr(info.value, "code", None) == code
    assert server.rcpt_counts[address] == 1
    assert server.messages == []
    # The refused transaction was RSET and the same connection carries the next message.
    await transport.send(make_message(GOOD))
    assert [m.rcpt_tos for m in server.messages] == [[GOOD]]
    assert server.connections == 1


def test_throttle_error_is_transient_with_a_delay() -> None:
    assert issubclass(ThrottledError, TransientError)


@pytest.mark.parametrize(("reply", "error"), [(554, PermanentError), (452, TransientError)])
async def test_data_replies_are_classified(
    tmp_path: Path, reply: int, error: type[Exception]
) -> None:
    with SmtpTestServer(data_policy=reply) as srv:
        t = await _transport(tmp_path, srv.url())
        try:
            with pytest.raises(error) as info:
                await t.send(make_message(GOOD))
            assert info.type is error
            assert str(reply) in str(info.value)
        finally:
            await t.close()
        assert srv.messages == []


async def test_reconnects_after_the_server_closed_an_idle_connection(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    await transport.send(make_message(GOOD))
    server.drop_connections()
    await asyncio.sleep(0.05)
    await transport.send(make_message(GOOD))
    assert len(server.messages) == 2
    assert server.connections == 2


async def test_421_closes_the_connection_and_the_next_send_reconnects(
    tmp_path: Path,
) -> None:
    with SmtpTestServer(rcpt_policy={TEMP: 421}) as srv:
        t = await _transport(tmp_path, srv.url())
        try:
            with pytest.raises(TransientError) as info:
                await t.send(make_message(TEMP))
            assert info.value.code == "421"
            await t.send(make_message(GOOD))
        finally:
            await t.close()
        assert [m.rcpt_tos for m in srv.messages] == [[GOOD]]
        assert srv.connections == 2


async def test_connection_refused_is_transient(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t = await _transport(tmp_path, f"smtp://127.0.0.1:{port}")
    try:
        with pytest.raises(TransientError) as info:
            await t.send(make_message(GOOD))
        assert type(info.value) is TransientError
    finally:
        await t.close()


async def test_header_injection_is_refused_before_connecting(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    with pytest.raises(PermanentError):
        await transport.send(make_message(GOOD, subject="Hi\r\nBcc: victim@example.com"))
    with pytest.raises(PermanentError):
        await transport.send(make_message("victim@example.com>\r\nRCPT TO:<x@example.com"))
    assert server.connections == 0


async def test_starttls_with_auth(tmp_path: Path, tls_files: TlsFiles) -> None:
    with SmtpTestServer(auth={"mailer@x": "p@ss:w/rd"}, tls=tls_files) as srv:
        url = srv.url(user="mailer@x", password="p@ss:w/rd")
        assert url.startswith("smtp+starttls://mailer%40x:p%40ss%3Aw%2Frd@")
        t = await _transport(tmp_path, url)
        try:
            await t.send(make_message(GOOD))
            await t.send(make_message(GOOD))
        finally:
            await t.close()
        assert len(srv.messages) == 2
        assert all(m.tls and m.authenticated_as == "mailer@x" for m in srv.messages)
        assert srv.connections == 1

        bad = await _transport(tmp_path, srv.url(user="mailer@x", password="wrong"))
        try:
            with pytest.raises(SendingPausedError) as info:
                await bad.send(make_message(GOOD))
            assert info.value.code == "535"
        finally:
            await bad.close()

        # Certificate verification is on unless ?verify=false: the self-signed cert fails.
        strict = await _transport(tmp_path, url.split("?")[0])
        try:
            with pytest.raises(SendingPausedError) as info:
                await strict.send(make_message(GOOD))
            assert info.value.code == "tls_verify"
        finally:
            await strict.close()
        assert len(srv.messages) == 2


async def test_auth_is_required_by_the_server(tmp_path: Path, tls_files: TlsFiles) -> None:
    with SmtpTestServer(auth={"u": "p"}, tls=tls_files) as srv:
        t = await _transport(tmp_path, srv.url())  # STARTTLS but no credentials
        try:
            with pytest.raises(SendingPausedError) as info:
                await t.send(make_message(GOOD))
            assert info.value.code == "530"
        finally:
            await t.close()
        assert srv.messages == []


async def test_starttls_required_but_not_offered(server: SmtpTestServer, tmp_path: Path) -> None:
    t = await _transport(tmp_path, server.url(scheme="smtp+starttls"))
    try:
        with pytest.raises(SendingPausedError):
            await t.send(make_message(GOOD))
    finally:
        await t.close()
    assert server.messages == []


async def test_implicit_tls(tmp_path: Path, tls_files: TlsFiles) -> None:
    with SmtpTestServer(tls=tls_files, implicit_tls=True, auth={"u": "p"}) as srv:
        t = await _transport(tmp_path, srv.url(user="u", password="p"))
        try:
            await t.send(make_message(GOOD))
        finally:
            await t.close()
        [received] = srv.messages
        assert received.tls
        assert received.authenticated_as == "u"


async def test_dkim_signed_message_verifies_at_the_server(
    server: SmtpTestServer, tmp_path: Path
) -> None:
    key = DkimKey()
    t = await _transport(tmp_path, server.url(), **key.settings())
    try:
        await t.send(make_message(GOOD))
    finally:
        await t.close()
    [received] = server.messages
    assert received.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(received.data, dnsfunc=key.dnsfunc)
    assert not dkim.verify(
        received.data.replace(UNSUB_URL.encode(), b"https://evil.test/x"), dnsfunc=key.dnsfunc
    )


def test_smtp_url_forms() -> None:
    plain = SmtpConfig.from_url("smtp://relay.internal")
    assert (plain.port, plain.implicit_tls, plain.starttls) == (25, False, False)
    assert plain.verify
    assert plain.username is None
    tls = SmtpConfig.from_url("smtp+starttls://u%40x:p%3A1@mail.example.com?verify=false")
    assert (tls.port, tls.starttls, tls.verify) == (587, True, False)
    assert (tls.username, tls.password) == ("u@x", "p:1")
    implicit = SmtpConfig.from_url("smtps://mail.example.com:2465")
    assert (implicit.port, implicit.implicit_tls, implicit.starttls) == (2465, True, False)
    with pytest.raises(ValueError, match="smtp"):
        SmtpConfig.from_url("http://mail.example.com")
