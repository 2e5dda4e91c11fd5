"""One error format for every failure ({"error": {"code", "message", "details"}}), and
request ids."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from starlette.requests import Request

from tests.fixtures.client import api_client, auth
from tests.fixtures.errors import assert_error

TEMPLATES = "/api/v1/templates"
TEMPLATE = {"name": "T", "html": "<p>{{name}}</p>", "variables": {"name": {"type": "string"}}}


async def test_unknown_route_is_404(client: Any) -> None:
    error = assert_error(await client.http.get("/api/v1/no-such-thing"), 404, "not_found")
    assert error["details"] == []


async def test_wrong_method_is_405(client: Any, send_key: str) -> None:
    response = await client.http.patch(TEMPLATES, headers=auth(send_key), json={})
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_declared_length_over_limit_is_413(settings_factory: Any) -> None:
    async with api_client(settings_factory(max_body_bytes=2048)) as c:
        key = await c.make_key()
        body = b'{"name": "' + b"x" * 4000 + b'"}'
        response = await c.http.post(
            TEMPLATES,
            content=body,
            headers={**auth(key), "Content-Type": "application/json"},
        )
        assert_error(response, 413, "payload_too_large")
        assert "2048" in response.json()["error"]["message"]


async def _chunks(total: int, size: int = 512) -> AsyncIterator[bytes]:
    yield b'{"name": "streamed", "html": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


async def test_streamed_body_over_limit_is_413(settings_factory: Any) -> None:
    """No Content-Length (chunked): the limit is enforced while reading, still a 413."""
    async with api_client(settings_factory(max_body_bytes=2048)) as c:
        key = await c.make_key()
        request = c.http.build_request(
            "POST",
            TEMPLATES,
            content=_chunks(8192),
            headers={**auth(key), "Content-Type": "application/json"},
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        response = await c.http.send(request)
        assert_error(response, 413, "payload_too_large")
        # Nothing was created.
        listed = await c.http.get(TEMPLATES, headers=auth(key))
        assert listed.json()["total"] == 0


async def test_streamed_body_under_limit_is_accepted(settings_factory: Any) -> None:
    async with api_client(settings_factory(max_body_bytes=2048)) as c:
        key = await c.make_key()
        request = c.http.build_request(
            "POST",
            TEMPLATES,
            content=_chunks(1024),
            headers={**auth(key), "Content-Type": "application/json"},
        )
        assert "content-length" not in request.headers
        response = await c.http.send(request)
        assert response.status_code == 201, response.text


async def test_text_plain_to_json_endpoint_is_415(client: Any, send_key: str) -> None:
    response = await client.http.post(
        TEMPLATES,
        content=b'{"name": "x", "html": "y"}',
        headers={**auth(send_key), "Content-Type": "text/plain"},
    )
    error = assert_error(response, 415, "unsupported_media_type")
    assert "text/plain" in error["message"]


async def test_malformed_json_is_400(client: Any, send_key: str) -> None:
    response = await client.http.post(
        TEMPLATES,
        content=b'{"name": "x", "html": ',
        headers={**auth(send_key), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "malformed_json")


async def test_wrong_types_are_422_naming_each_field(client: Any, send_key: str) -> None:
    response = await client.http.post(
        TEMPLATES,
        json={"name": 5, "html": ["not", "a", "string"], "variables": "nope"},
        headers=auth(send_key),
    )
    error = assert_error(response, 422, "validation_error")
    fields = {d["field"] for d in error["details"]}
    assert {"name", "html", "variables"} <= fields, error
    for detail in error["details"]:
        assert detail["message"]


async def test_unknown_field_is_422(client: Any, send_key: str) -> None:
    response = await client.http.post(
        TEMPLATES, json={**TEMPLATE, "colour": "red"}, headers=auth(send_key)
    )
    error = assert_error(response, 422, "validation_error")
    assert [d["field"] for d in error["details"]] == ["colour"]


async def test_query_parameter_errors_name_the_parameter(client: Any, send_key: str) -> None:
    response = await client.http.get(TEMPLATES, params={"limit": "abc"}, headers=auth(send_key))
    error = assert_error(response, 422, "validation_error")
    assert [d["field"] for d in error["details"]] == ["query:limit"]


async def test_missing_key_is_401_with_bearer_challenge(client: Any) -> None:
    response = await client.http.get(TEMPLATES)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer " + "0" * 64, "Basic dXNlcjpwYXNz", "Bearer", "Token abc", "bearer  "]
)
async def test_bad_credentials_are_401(client: Any, header: str) -> None:
    response = await client.http.get(TEMPLATES, headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_send_key_on_admin_route_is_403_insufficient_scope(
    client: Any, send_key: str
) -> None:
    response = await client.http.get("/api/v1/admin/keys", headers=auth(send_key))
    error = assert_error(response, 403, "insufficient_scope")
    assert "admin" in error["message"]


async def test_rate_limit_is_429_with_retry_after(settings_factory: Any) -> None:
    async with api_client(settings_factory(api_rate_limit=3)) as c:
        key, other = await c.make_key("a"), await c.make_key("b")
        for _ in range(3):
            assert (await c.http.get(TEMPLATES, headers=auth(key))).status_code == 200
        response = await c.http.get(TEMPLATES, headers=auth(key))
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
        # The limit is per key.
        assert (await c.http.get(TEMPLATES, headers=auth(other))).status_code == 200


async def test_request_id_is_echoed(client: Any) -> None:
    response = await client.http.get("/api/v1/health", headers={"X-Request-ID": "abc-123.x_y"})
    assert response.headers["x-request-id"] == "abc-123.x_y"
    # Also on error responses.
    missing = await client.http.get("/api/v1/nope", headers={"X-Request-ID": "req-404"})
    assert missing.headers["x-request-id"] == "req-404"


async def test_request_id_is_generated_when_absent_or_unsafe(client: Any) -> None:
    first = (await client.http.get("/api/v1/health")).headers["x-request-id"]
    second = (await client.http.get("/api/v1/health")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second
    unsafe = await client.http.get("/api/v1/health", headers={"X-Request-ID": "a b<script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (
            asyncpg.exceptions.ConnectionDoesNotExistError("closed"),
            503,
            "unavailable",
        ),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), 503, "unavailable"),
        (asyncpg.exceptions.InternalClientError("another operation"), 503, "unavailable"),
        (
            asyncpg.exceptions.CannotConnectNowError("starting up"),
            503,
            "unavailable",
        ),
        (asyncpg.exceptions.NumericValueOutOfRangeError("out of range"), 422, "value_out_of_range"),
    ],
)
async def test_errors_of_hand_written_statements_are_answered_as_sqlalchemys(
    client: Any, error: Exception, status: int, code: str
) -> None:
    """The hot reads' statements run on asyncpg directly: its errors arrive unwrapped and
    must get the answers SQLAlchemy's wrapped ones get (a database restart is a 503 to
    retry, not a 500)."""
    handler = client.app.exception_handlers[Exception]
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "query_string": b""}
    response = await handler(Request(scope), error)
    assert response.status_code == status
    assert json.loads(response.body)["error"]["code"] == code
