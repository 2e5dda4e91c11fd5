"""Retries against a real HTTP server that answers 429/5xx or drops the connection before
answering: what is resent, how long the client waits, and that a POST keeps one
Idempotency-Key across its retries."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailer_client import (
    NO_RETRIES,
    AsyncMailerClient,
    MailerClient,
    MailerConnectionError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    UnexpectedResponseError,
)
from tests.scripted_server import DROP, Answer, ScriptedServer

EMPTY_PAGE: dict[str, Any] = {"data": [], "total": 0, "limit": 100, "offset": 0}
BATCH: dict[str, Any] = {
    "id": "b1",
    "status": "SENDING",
    "createdAt": "2030-01-01T00:00:00Z",
    "sendAt": None,
    "recipients": 1,
    "queued": 1,
    "suppressed": 0,
    "duplicates": 0,
}
TEMPLATE: dict[str, Any] = {
    "id": "t1",
    "name": "n",
    "subject": "s",
    "html": "<p>x</p>",
    "text": None,
    "variables": {},
    "usedVariables": [],
    "version": 1,
    "versionId": "v1",
    "createdAt": "2030-01-01T00:00:00Z",
    "updatedAt": "2030-01-01T00:00:00Z",
}
UNAVAILABLE = Answer(503, {"error": {"code": "unavailable", "message": "db down", "details": []}})
LIMITED = Answer(429, {"error": {"code": "rate_limited", "message": "slow", "details": []}})
POLICY = RetryPolicy(max_attempts=4, backoff=0.01, max_backoff=0.05, jitter=0.0)


class Waits:
    """The sleep the client is given: records each wait it asks for, then really waits."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        time.sleep(seconds)

    async def async_sleep(self, seconds: float) -> None:
        import asyncio

        self.asked.append(seconds)
        await asyncio.sleep(seconds)


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


@pytest.fixture
def waits() -> Waits:
    return Waits()


def _client(server: ScriptedServer, waits: Waits, retry: RetryPolicy = POLICY) -> MailerClient:
    return MailerClient(server.url, "k", retry=retry, sleep=waits)


def test_429_is_retried_after_the_retry_after_it_asks(
    scripted: ScriptedServer, waits: Waits
) -> None:
    scripted.answer(Answer(429, LIMITED.body, {"Retry-After": "1"}), Answer(200, EMPTY_PAGE))
    with _client(scripted, waits) as c:
        assert c.templates.list().total == 0
    assert len(scripted.received) == 2
    assert waits.asked == [1.0]


def test_5xx_is_retried_with_growing_backoff(scripted: ScriptedServer, waits: Waits) -> None:
    scripted.answer(UNAVAILABLE, Answer(502, {}), Answer(500, {}), Answer(200, EMPTY_PAGE))
    with _client(scripted, waits) as c:
        assert c.batches.list().total == 0
    assert len(scripted.received) == 4
    assert waits.asked == [0.01, 0.02, 0.04]


def test_attempts_are_bounded_and_the_last_error_is_raised(
    scripted: ScriptedServer, waits: Waits
) -> None:
    scripted.answer(*[UNAVAILABLE] * 10)
    with _client(scripted, waits) as c, pytest.raises(ServerError) as caught:
        c.templates.get("t1")
    assert len(scripted.received) == POLICY.max_attempts
    error = caught.value
    assert (error.status, error.code, error.message) == (503, "unavailable", "db down")


def test_one_idempotency_key_for_a_post_and_its_retries(
    scripted: ScriptedServer, waits: Waits
) -> None:
    scripted.answer(UNAVAILABLE, DROP, Answer(201, BATCH), Answer(201, BATCH))
    with _client(scripted, waits) as c:
        c.batches.create("t1", [{"email": "a@example.com"}])
        c.batches.create("t1", [{"email": "a@example.com"}])
    keys = [r.headers.get("idempotency-key") for r in scripted.received]
    assert keys[0] is not None
    assert keys[0] == keys[1] == keys[2]  # one logical POST, three attempts
    assert keys[3] is not None and keys[3] != keys[0]  # the next POST has its own
    assert json.loads(scripted.received[0].body) == json.loads(scripted.received[2].body)


def test_a_given_idempotency_key_is_sent(scripted: ScriptedServer, waits: Waits) -> None:
    scripted.answer(Answer(201, BATCH, {"Idempotent-Replayed": "true"}))
    with _client(scripted, waits) as c:
        created = c.batches.create("t1", [{"email": "a@example.com"}], idempotency_key="mine")
    assert scripted.received[0].headers["idempotency-key"] == "mine"
    assert created.replayed is True


def test_a_post_without_idempotency_is_not_resent_after_a_5xx(
    scripted: ScriptedServer, waits: Waits
) -> None:
    # The server may have created the template before failing: resending could make two.
    scripted.answer(UNAVAILABLE, Answer(201, TEMPLATE))
    with _client(scripted, waits) as c, pytest.raises(ServerError):
        c.templates.create("n", html="<p>x</p>")
    assert len(scripted.received) == 1


def test_a_post_without_idempotency_is_not_resent_after_a_lost_answer(
    scripted: ScriptedServer, waits: Waits
) -> None:
    scripted.answer(DROP, Answer(201, TEMPLATE))
    with _client(scripted, waits) as c, pytest.raises(MailerConnectionError):
        c.templates.create("n", html="<p>x</p>")
    assert len(scripted.received) == 1


def test_a_post_without_idempotency_is_resent_after_a_429(
    scripted: ScriptedServer, waits: Waits
) -> None:
    scripted.answer(Answer(429, LIMITED.body, {"Retry-After": "0"}), Answer(201, TEMPLATE))
    with _client(scripted, waits) as c:
        assert c.templates.create("n", html="<p>x</p>").id == "t1"
    assert len(scripted.received) == 2


def test_a_dropped_connection_is_retried_for_a_get(scripted: ScriptedServer, waits: Waits) -> None:
    scripted.answer(DROP, Answer(200, {"status": "ok"}))
    with _client(scripted, waits) as c:
        assert c.health().status == "ok"
    assert len(scripted.received) == 2


def test_a_server_that_is_not_there_is_tried_then_reported(waits: Waits) -> None:
    # A port bound but not listening: connections are refused, and no one else can take it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        client = MailerClient(url, "k", retry=POLICY, sleep=waits)
        with client as c, pytest.raises(MailerConnectionError) as caught:
            c.templates.create("n")  # never sent: safe to retry even without idempotency
    assert len(waits.asked) == POLICY.max_attempts - 1
    assert "ConnectError" in str(caught.value)


def test_retry_after_beyond_the_limit_is_raised_not_waited(
    scripted: ScriptedServer, waits: Waits
) -> None:
    scripted.answer(Answer(429, LIMITED.body, {"Retry-After": "3600"}))
    with _client(scripted, waits) as c, pytest.raises(RateLimitError) as caught:
        c.templates.list()
    assert caught.value.retry_after == 3600.0
    assert caught.value.status == 429 and caught.value.code == "rate_limited"
    assert waits.asked == []


def test_no_retries(scripted: ScriptedServer, waits: Waits) -> None:
    scripted.answer(UNAVAILABLE, Answer(200, EMPTY_PAGE))
    with _client(scripted, waits, NO_RETRIES) as c, pytest.raises(ServerError):
        c.templates.list()
    assert len(scripted.received) == 1


def test_an_error_page_that_is_not_json(scripted: ScriptedServer, waits: Waits) -> None:
    scripted.answer(Answer(502, raw=b"<html>Bad Gateway</html>"))
    with _client(scripted, waits, NO_RETRIES) as c, pytest.raises(ServerError) as caught:
        c.templates.list()
    assert caught.value.status == 502
    assert caught.value.code == "http_502"
    assert "Bad Gateway" in caught.value.message


def test_ready_answers_not_ready_instead_of_raising(scripted: ScriptedServer, waits: Waits) -> None:
    body = {"status": "not_ready", "checks": {"queue": {"ok": False, "error": "down"}}}
    scripted.answer(Answer(503, body))
    with _client(scripted, waits) as c:
        readiness = c.ready()
    assert readiness.ready is False
    assert readiness.checks["queue"]["error"] == "down"
    assert len(scripted.received) == 1


async def test_async_retries_keep_the_idempotency_key(
    scripted: ScriptedServer, waits: Waits
) -> None:
    scripted.answer(
        Answer(429, LIMITED.body, {"Retry-After": "0"}), UNAVAILABLE, Answer(201, BATCH)
    )
    async with AsyncMailerClient(scripted.url, "k", retry=POLICY, sleep=waits.async_sleep) as c:
        created = await c.batches.create("t1", [{"email": "a@example.com"}])
    assert created.id == "b1"
    keys = {r.headers["idempotency-key"] for r in scripted.received}
    assert len(scripted.received) == 3 and len(keys) == 1
    assert waits.asked == [0.0, 0.02]


async def test_async_attempts_are_bounded(scripted: ScriptedServer, waits: Waits) -> None:
    scripted.answer(*[UNAVAILABLE] * 10)
    async with AsyncMailerClient(scripted.url, "k", retry=POLICY, sleep=waits.async_sleep) as c:
        with pytest.raises(ServerError):
            await c.templates.list()
    assert len(scripted.received) == POLICY.max_attempts


def test_authorization_and_user_agent_are_sent(scripted: ScriptedServer, waits: Waits) -> None:
    scripted.answer(Answer(200, EMPTY_PAGE))
    with _client(scripted, waits) as c:
        c.suppressions.list(reason="BOUNCE", search="x@y")
    received = scripted.received[0]
    assert received.headers["authorization"] == "Bearer k"
    assert received.headers["user-agent"].startswith("mailer-client-python/")
    assert (
        received.path == "/api/v1/admin/suppressions?limit=100&offset=0&reason=BOUNCE&search=x%40y"
    )


def test_a_success_that_is_not_the_expected_shape(scripted: ScriptedServer, waits: Waits) -> None:
    scripted.answer(Answer(200, raw=b"<html>captive portal</html>"), Answer(200, {"data": 1}))
    with _client(scripted, waits, NO_RETRIES) as c:
        with pytest.raises(UnexpectedResponseError) as caught:
            c.templates.list()
        assert caught.value.status == 200
        assert "captive portal" in caught.value.body
        with pytest.raises(UnexpectedResponseError, match="templates"):
            c.templates.list()
