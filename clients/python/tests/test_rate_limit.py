"""The server's own 429 (API_RATE_LIMIT per key): a second live mailer allowing 60 requests
a minute, so that a burst runs out and the answer asks to retry after 1 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer_client import NO_RETRIES, MailerClient, RateLimitError, RetryPolicy
from tests import live_server
from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir: Path = tmp_path_factory.mktemp("limited")
    running = live_server.start(data_dir, "limited", {"API_RATE_LIMIT": "60"})
    try:
        yield running
    finally:
        live_server.stop(running)


def _exhaust(client: MailerClient) -> RateLimitError:
    """Spend the key's burst; the first refusal."""
    for _ in range(200):
        try:
            client.templates.list(limit=1)
        except RateLimitError as refused:
            return refused
    raise AssertionError("200 requests and no 429 from a limit of 60 a minute")


def test_the_servers_429_is_raised_with_its_retry_after(limited: LiveServer) -> None:
    with MailerClient(limited.url, limited.admin_key, retry=NO_RETRIES) as c:
        refused = _exhaust(c)
    assert refused.status == 429
    assert refused.code == "rate_limited"
    assert refused.retry_after == 1.0
    assert "retry after" in refused.message


def test_the_servers_429_is_waited_out(limited: LiveServer) -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with MailerClient(limited.url, limited.admin_key) as admin:
        key = admin.keys.create("burst").key
    retrying = RetryPolicy(max_attempts=3, backoff=0.01)
    with MailerClient(limited.url, key, retry=retrying, sleep=sleep) as c:
        for _ in range(200):
            assert c.templates.list(limit=1).limit == 1  # a 429 is waited out, not raised
            if waits:
                break
    assert waits == [1.0]
