from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import socket
from collections.abc import AsyncIterator, Iterator
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailer.transports.base import (
    MailAttachment,
    PermanentError,
    SendingPausedError,
    ThrottledError,
    TransientError,
    TransportError,
)
from mailer.transports.ses import SesTransport, sanitize_tags
from tests.fixtures.ses_server import (
    SES_ACCESS_KEY,
    SES_SECRET_KEY,
    MotoSes,
    SesFailure,
    SesTestServer,
    start_moto,
    stop_moto,
)
from tests.transports.helpers import HTML, SUBJECT, TEXT, UNSUB_URL, make_message, make_settings

GOOD = "good@example.com"


def decoded(value: str) -> str:
    return str(make_header(decode_header(value)))


@pytest.fixture
def server() -> Iterator[SesTestServer]:
    with SesTestServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoSes]:
    moto = start_moto()
    yield moto
    stop_moto(moto)


def _settings(tmp_path: Path, endpoint: str, **overrides: Any) -> Any:
    return make_settings(
        tmp_path,
        mail_transport="ses",
        aws_endpoint_url=endpoint,
        aws_region="us-east-1",
        aws_access_key_id=SES_ACCESS_KEY,
        aws_secret_access_key=SES_SECRET_KEY,
        **overrides,
    )


@pytest.fixture
async def transport(server: SesTestServer, tmp_path: Path) -> AsyncIterator[SesTransport]:
    t = SesTransport(_settings(tmp_path, server.url, ses_configuration_set="mailer-events"))
    await t.start()
    yield t
    await t.close()


async def test_send_email_request(server: SesTestServer, transport: SesTransport) -> None:
    message = make_message(
        GOOD,
        reply_to=("support@example.com", "Jörg <j@example.com>"),
        tags={"batch": "b-1", "bad name!": "a@b.c", "empty": ""},
    )
    result = await transport.send(message)

    [received] = server.messages
    assert result.provider_message_id == received.message_id
    assert received.access_key == SES_ACCESS_KEY
    assert received.region == "us-east-1"
    request = received.request
    # Non-ASCII display names travel as RFC 2047 encoded words.
    assert request["FromEmailAddress"].isascii()
    assert decoded(request["FromEmailAddress"]) == "Mailer Tëst <sender@example.com>"
    assert request["Destination"] == {"ToAddresses": [GOOD]}
    assert [decoded(a) for a in request["ReplyToAddresses"]] == [
        "support@example.com",
        "Jörg <j@example.com>",
    ]
    assert request["ConfigurationSetName"] == "mailer-events"
    simple = received.simple
    assert simple["Subject"] == {"Data": SUBJECT, "Charset": "UTF-8"}
    assert simple["Body"]["Text"] == {"Data": TEXT, "Charset": "UTF-8"}
    assert simple["Body"]["Html"] == {"Data": HTML, "Charset": "UTF-8"}
    assert received.headers == {
        "List-Unsubscribe": f"<{UNSUB_URL}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    # SES replaces any Message-ID we give, so ours is not sent.
    assert "Message-ID" not in received.headers
    assert received.tags == {"batch": "b-1", "bad_name_": "a_b_c"}


async def test_text_only_and_no_optional_fields(server: SesTestServer, tmp_path: Path) -> None:
    t = SesTransport(_settings(tmp_path, server.url))
    await t.start()
    try:
        await t.send(make_message(GOOD, html=None, reply_to=(), headers={}, tags={}))
    finally:
        await t.close()
    [received] = server.messages
    assert set(received.simple["Body"]) == {"Text"}
    assert "Headers" not in received.simple
    for key in ("ReplyToAddresses", "EmailTags", "ConfigurationSetName"):
        assert key not in received.request


async def test_attachments_go_as_raw_mime(server: SesTestServer, tmp_path: Path) -> None:
    files = (MailAttachment("a.pdf", "application/pdf", b"%PDF\x00" * 50),)
    t = SesTransport(_settings(tmp_path, server.url, ses_configuration_set="mailer-events"))
    await t.start()
    try:
        await t.send(make_message(GOOD, attachments=files, tags={"batch": "b-1"}))
    finally:
        await t.close()
    [received] = server.messages
    request = received.request
    assert set(request["Content"]) == {"Raw"}
    raw = base64.b64decode(request["Content"]["Raw"]["Data"])
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == GOOD
    assert message["List-Unsubscribe"] == f"<{UNSUB_URL}>"
    assert [(p.get_filename(), p.get_payload(decode=True)) for p in message.iter_attachments()] == [
        ("a.pdf", b"%PDF\x00" * 50)
    ]
    # Tags and the configuration set still travel as request fields.
    assert received.tags == {"batch": "b-1"}
    assert request["ConfigurationSetName"] == "mailer-events"


async def test_client_and_connection_are_reused(
    server: SesTestServer, transport: SesTransport
) -> None:
    for _ in range(5):
        await transport.send(make_message(GOOD))
    assert len(server.messages) == 5
    assert len(server.peers) == 1
    await asyncio.gather(*(transport.send(make_message(f"r{i}@example.com")) for i in range(20)))
    assert len(server.messages) == 25


@pytest.mark.parametrize(
    ("failure", "error", "code"),
    [
        (SesFailure.throttle(), ThrottledError, "TooManyRequestsException"),
        (SesFailure.server_error(500), TransientError, "InternalFailure"),
        (SesFailure.server_error(503), TransientError, "InternalFailure"),
        (SesFailure.rejected(), PermanentError, "MessageRejected"),
        (SesFailure.bad_request(), PermanentError, "BadRequestException"),
        (SesFailure.mail_from_not_verified(), PermanentError, "MailFromDomainNotVerifiedException"),
        (SesFailure.limit_exceeded(), PermanentError, "LimitExceededException"),
        (SesFailure.account_suspended(), SendingPausedError, "AccountSuspendedException"),
        (SesFailure.sending_paused(), SendingPausedError, "SendingPausedException"),
        (SesFailure.drop_connection(), TransientError, None),
    ],
)
async def test_errors_are_classified_and_never_retried_by_botocore(
    server: SesTestServer,
    transport: SesTransport,
    failure: SesFailure,
    error: type[TransportError],
    code: str | None,
) -> None:
    server.set_rule("bad@example.com", failure)
    with pytest.raises(error) as info:
        await transport.send(make_message("bad@example.com"))
    assert info.type is error
    if code is not None:
        assert info.value.code == code
    # Exactly one request: botocore's own retries are off for sends.
    assert server.attempts_by_address["bad@example.com"] == 1
    assert server.messages == []
    await transport.send(make_message(GOOD))
    assert len(server.messages) == 1


async def test_throttle_retry_after(server: SesTestServer, transport: SesTransport) -> None:
    server.fail_next(SesFailure.throttle(retry_after=3))
    with pytest.raises(ThrottledError) as info:
        await transport.send(make_message(GOOD))
    assert info.value.retry_after == 3.0
    server.fail_next(SesFailure.throttle())
    with pytest.raises(ThrottledError) as info:
        await transport.send(make_message(GOOD))
    assert info.value.retry_after == 1.0
    assert server.requests == 2


async def test_connection_refused_is_transient(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t = SesTransport(_settings(tmp_path, f"http://127.0.0.1:{port}"))
    await t.start()
    try:
        with pytest.raises(TransientError) as info:
            await t.send(make_message(GOOD))
        assert type(info.value) is TransientError
        assert await t.max_send_rate() is None
    finally:
        await t.close()


async def test_invalid_messages_never_reach_ses(
    server: SesTestServer, transport: SesTransport
) -> None:
    bad = [
        make_message(GOOD, subject="Hi\r\nBcc: victim@example.com"),
        make_message(GOOD, headers={"List-Unsubscribe": "<https://x>\nBcc: v@example.com"}),
        make_message(GOOD, headers={f"X-H{i}": "v" for i in range(16)}),
        make_message(GOOD, headers={"From": "other@example.com"}),
        make_message("victim@example.com\r\nX: y"),
        make_message(GOOD, html=None, text=None),
    ]
    for message in bad:
        with pytest.raises(PermanentError):
            await transport.send(message)
    assert server.requests == 0


async def test_max_send_rate(server: SesTestServer, transport: SesTransport) -> None:
    assert await transport.max_send_rate() == 14.0
    server.max_send_rate = -1.0
    assert await transport.max_send_rate() is None
    server.max_send_rate = None  # GetAccount answers 404
    assert await transport.max_send_rate() is None
    assert server.account_requests == 3


def test_sanitize_tags() -> None:
    assert sanitize_tags({"a b": "x" * 300, "ok": "v-1_2", "": "v"}) == [
        {"Name": "a_b", "Value": "x" * 256},
        {"Name": "ok", "Value": "v-1_2"},
    ]


async def test_send_through_moto(moto: MotoSes, tmp_path: Path) -> None:
    await moto.verify_identity("sender@example.com")
    t = SesTransport(_settings(tmp_path, moto.url))
    await t.start()
    try:
        result = await t.send(make_message(GOOD))
        # moto does not implement GetAccount: unknown rate, not an error.
        assert await t.max_send_rate() is None
        with pytest.raises(PermanentError) as info:
            await t.send(make_message(GOOD, from_addr="unverified@example.org"))
        assert info.value.code == "MessageRejected"
    finally:
        await t.close()
    sent = moto.sent_by_id(result.provider_message_id)
    assert sent.subject == SUBJECT
    assert sent.body == HTML
    assert sent.destinations == {"ToAddresses": [GOOD]}
    assert "sender@example.com" in sent.source
