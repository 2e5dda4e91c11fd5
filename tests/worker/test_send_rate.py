"""SEND_RATE for the ses transport defaults to the account's SES MaxSendRate."""

from __future__ import annotations

from typing import Any

import pytest

from mailer.queue.factory import build_queue
from mailer.worker.runtime import create_worker
from tests.fixtures.ses_server import SES_ACCESS_KEY, SES_SECRET_KEY, SesTestServer


async def _started_rate(
    settings_factory: Any, sessionmaker: Any, quota: float, **extra: Any
) -> Any:
    """The send rate a worker settles on at start, against an SES account with `quota`."""
    with SesTestServer(max_send_rate=quota) as server:
        settings = settings_factory(
            mail_transport="ses",
            aws_endpoint_url=server.url,
            aws_access_key_id=SES_ACCESS_KEY,
            aws_secret_access_key=SES_SECRET_KEY,
            **extra,
        )
        queue = build_queue(settings)
        try:
            worker = await create_worker(settings, sessionmaker, queue)
            worker.start()
            try:
                return worker.send_rate
            finally:
                await worker.stop()
        finally:
            await queue.close()


@pytest.mark.parametrize(("quota", "expected"), [(14.0, 14.0), (-1.0, None)])
async def test_rate_from_get_account(
    settings_factory: Any, sessionmaker: Any, quota: float, expected: float | None
) -> None:
    assert await _started_rate(settings_factory, sessionmaker, quota) == expected


async def test_explicit_send_rate_wins(settings_factory: Any, sessionmaker: Any) -> None:
    assert await _started_rate(settings_factory, sessionmaker, 14.0, send_rate=3) == 3
