"""Transports call `ready` with a connection at hand and nothing of the message written, and
keep that connection when `ready` refuses (the rate limiter's last word, delivery/chunk.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailer.delivery.send_rate import LocalRateLimiter
from mailer.transports.outbox import OutboxTransport
from mailer.transports.ses import SesTransport
from mailer.transports.smtp import SmtpTransport
from tests.fixtures.ses_server import SES_ACCESS_KEY, SES_SECRET_KEY, SesTestServer
from tests.fixtures.smtp_server import SmtpTestServer
from tests.transports.helpers import make_message, make_settings


class Refused(Exception):
    pass


async def refuse() -> None:
    raise Refused


async def test_smtp_calls_ready_once_connected_and_keeps_the_connection(tmp_path: Path) -> None:
    with SmtpTestServer() as srv:
        t = SmtpTransport(make_settings(tmp_path, mail_transport="smtp", smtp_url=srv.url()))
        await t.start()
        try:
            with pytest.raises(Refused):
                await t.send(make_message("a@example.com"), refuse)
            assert srv.connections == 1  # connected (greeting, EHLO) before ready
            assert srv.messages == []  # but nothing of the message went out
            calls: list[int] = []

            async def ready() -> None:
                calls.append(srv.connections)

            await t.send(make_message("b@example.com"), ready)
        finally:
            await t.close()
        assert calls == [1]  # the kept connection served the next send
        assert [m.rcpt_tos for m in srv.messages] == [["b@example.com"]]


async def test_ses_calls_ready_before_the_request_and_keeps_the_connection(
    tmp_path: Path,
) -> None:
    with SesTestServer() as server:
        settings = make_settings(
            tmp_path,
            mail_transport="ses",
            aws_endpoint_url=server.url,
            aws_region="us-east-1",
            aws_access_key_id=SES_ACCESS_KEY,
            aws_secret_access_key=SES_SECRET_KEY,
        )
        t = SesTransport(settings)
        await t.start()
        try:
            with pytest.raises(Refused):
                await t.send(make_message("a@example.com"), refuse)
            assert server.requests == 0
            called = asyncio.Event()

            async def ready() -> None:
                called.set()

            await t.send(make_message("b@example.com"), ready)
        finally:
            await t.close()
        assert called.is_set()
        assert server.requests == 1


async def test_outbox_writes_nothing_when_ready_refuses(tmp_path: Path) -> None:
    t = OutboxTransport(make_settings(tmp_path, mail_transport="outbox"))
    await t.start()
    with pytest.raises(Refused):
        await t.send(make_message("a@example.com"), refuse)
    await t.send(make_message("b@example.com"))
    await t.close()
    assert len(list(t.directory.glob("*.eml"))) == 1


async def test_a_send_held_up_after_its_slot_is_late() -> None:
    limiter = LocalRateLimiter(100.0)  # a slot every 10 ms; late beyond 5 ms
    await limiter.acquire()
    now = asyncio.get_running_loop().time()
    assert not limiter.late(now)
    assert limiter.late(now - 0.05)
    assert not LocalRateLimiter(None).late(now - 60)
