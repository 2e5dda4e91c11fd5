"""Bounds every JSON body is held to: nesting depth (refused with 422 naming the field before
anything else touches the data), the key checked before the body is read, per-endpoint body
limits, and how many objects and arrays a body may hold for its size."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select

from mailer.app import create_app
from mailer.config import load_settings
from mailer.db import session_scope
from mailer.jsonbody import MAX_JSON_DEPTH
from mailer.logging import configure_logging
from mailer.models import Batch, Template
from tests.conftest import TEST_UNSUBSCRIBE_SECRET
from tests.fixtures.client import ApiClient, auth
from tests.fixtures.errors import assert_error
from tests.fixtures.pipeline import create_template, post_batch

V1 = "/api/v1"


def nested(levels: int) -> Any:
    """A JSON value `levels` deep: {"n": {"n": ... {}}}."""
    value: Any = {}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def deep_text(levels: int) -> str:
    # The json module cannot encode 1,000 levels (recursion): the text is built by hand.
    return '{"n":' * (levels - 1) + "{}" + "}" * (levels - 1)


async def _count(c: ApiClient, model: Any) -> int:
    async with session_scope(c.state.sessionmaker) as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def _too_deep(response: Any, field: str) -> None:
    """422 naming `field` (a recipient's is listed with the batch's other recipient errors,
    code validation_error)."""
    error = assert_error(response, 422)
    assert error["code"] == ("validation_error" if "recipients[" in field else "too_deeply_nested")
    named = [d for d in error["details"] if d["field"].startswith(field)]
    assert named and str(MAX_JSON_DEPTH) in named[0]["message"], error


async def test_deep_nesting_is_refused_in_every_body(
    client: ApiClient, send_key: str, admin_key: str
) -> None:
    template_id = await create_template(client.http, send_key)
    deep = deep_text(1000)
    headers = {**auth(admin_key), "Content-Type": "application/json"}
    tid = template_id
    cases = [
        (
            "POST",
            "/batches",
            '{"template_id":"TID","recipients":[{"email":"a@example.com"}],"metadata":{"m":DEEP}}',
            "metadata.m",
        ),
        (
            "POST",
            "/batches",
            '{"template_id":"TID","recipients":[{"email":"a@example.com"},'
            '{"email":"b@example.com","variables":{"name":"B","v":DEEP}}]}',
            "recipients[1].variables.v",
        ),
        (
            "POST",
            "/templates",
            '{"name":"t","html":"x","variables":{"x":{"type":"object","default":DEEP}}}',
            "variables.x.default",
        ),
        ("PUT", f"/templates/{tid}", '{"variables":DEEP}', "variables"),
        ("POST", f"/templates/{tid}/render", '{"variables":{"a":DEEP}}', "variables.a"),
        ("POST", "/admin/keys", '{"name":DEEP}', "name"),
        ("POST", "/admin/suppressions", '{"emails":' + "[" * 999 + "]" * 999 + "}", "emails"),
        ("POST", "/admin/sending/pause", '{"reason":DEEP}', "reason"),
        ("POST", "/admin/dead-letters/retry", '{"ids":DEEP}', "ids"),
    ]
    for method, path, text, field in cases:
        content = text.replace("TID", tid).replace("DEEP", deep).encode()
        response = await client.http.request(
            method, f"{V1}{path}", content=content, headers=headers
        )
        _too_deep(response, field)
    assert await _count(client, Batch) == 0
    assert await _count(client, Template) == 1  # only the one made above


async def test_the_documented_depth_is_accepted_one_more_is_not(
    client: ApiClient, send_key: str
) -> None:
    template_id = await create_template(client.http, send_key)
    recipients = [{"email": "a@example.com", "variables": {"name": "A", "code": "c"}}]
    # metadata is level 2 of the body: its value may nest MAX_JSON_DEPTH - 1 levels.
    ok = await post_batch(
        client.http, send_key, template_id, recipients, metadata=nested(MAX_JSON_DEPTH - 1)
    )
    assert ok.status_code == 201, ok.text
    refused = await post_batch(
        client.http, send_key, template_id, recipients, metadata=nested(MAX_JSON_DEPTH)
    )
    _too_deep(refused, "metadata.n")
    # A recipient's variables are level 4.
    deep_vars = {"email": "b@example.com", "variables": nested(MAX_JSON_DEPTH - 2)}
    deep_vars["variables"]["name"] = "B"
    refused = await post_batch(client.http, send_key, template_id, [deep_vars])
    _too_deep(refused, "recipients[0].variables.n")
    deep_vars["variables"] = {**nested(MAX_JSON_DEPTH - 3), "name": "B"}
    ok = await post_batch(client.http, send_key, template_id, [deep_vars])
    assert ok.status_code == 201, ok.text


async def test_beyond_the_decoders_own_limit_is_still_422(client: ApiClient, send_key: str) -> None:
    response = await client.http.post(
        f"{V1}/templates",
        content=(
            '{"name":"' + "x" * 90_000 + '","variables":' + "[" * 5000 + "]" * 5000 + "}"
        ).encode(),
        headers={**auth(send_key), "Content-Type": "application/json"},
    )
    assert_error(response, 422, "too_deeply_nested")


def _body_routes() -> list[tuple[str, str]]:
    """Every keyed API route that takes a body (webhooks and unsubscribe have no key), from
    the OpenAPI document: a route added later is covered too."""
    settings = load_settings(_env_file=None, unsubscribe_secret=TEST_UNSUBSCRIBE_SECRET)
    paths = create_app(settings).openapi()["paths"]
    out = []
    for path, operations in paths.items():
        if not path.startswith(V1) or path.startswith((f"{V1}/webhooks", f"{V1}/unsubscribe")):
            continue
        for method in operations.keys() & {"post", "put", "patch"}:
            out.append((method.upper(), path.replace("{", "x").replace("}", "")))
    return sorted(out)


BODY_ROUTES = _body_routes()


def test_the_route_list_covers_the_known_bodies() -> None:
    paths = {p for _, p in BODY_ROUTES}
    for path in ("/templates", "/batches", "/admin/keys", "/admin/suppressions"):
        assert f"{V1}{path}" in paths


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_the_key_is_checked_before_the_body_is_read(
    client: ApiClient, method: str, path: str
) -> None:
    """Malformed JSON without a key: 401, the body never parsed (nor read)."""
    response = await client.http.request(
        method, path, content=b'{"name": [1, 2,', headers={"Content-Type": "application/json"}
    )
    assert_error(response, 401, "unauthorized")
    wrong = await client.http.request(
        method,
        path,
        content=b"[" * 2000,
        headers={"Content-Type": "application/json", "Authorization": "Bearer nope"},
    )
    assert_error(wrong, 401, "unauthorized")


async def test_send_key_on_admin_body_is_403_before_the_body(
    client: ApiClient, send_key: str
) -> None:
    response = await client.http.post(
        f"{V1}/admin/keys",
        content=b"not json",
        headers={**auth(send_key), "Content-Type": "application/json"},
    )
    assert_error(response, 403)


async def test_small_bodies_have_small_limits(client: ApiClient, admin_key: str) -> None:
    headers = {**auth(admin_key), "Content-Type": "application/json"}
    two_mib = b'{"name":"' + b"x" * (2 * 1024 * 1024) + b'"}'
    for path in ("/admin/keys", "/admin/sending/pause"):
        response = await client.http.post(f"{V1}{path}", content=two_mib, headers=headers)
        error = assert_error(response, 413, "payload_too_large")
        assert "for this endpoint" in error["message"]
    sns = await client.http.post(
        f"{V1}/webhooks/ses",
        content=b'{"Type":"' + b"x" * (600 * 1024) + b'"}',
        headers={"Content-Type": "text/plain"},
    )
    assert_error(sns, 413, "payload_too_large")
    # Templates hold up to 1M characters of html and of text: they are not that small.
    big = await client.http.post(
        f"{V1}/templates",
        json={"name": "big", "html": "<p>" + "x" * 900_000 + "</p>", "text": "y" * 900_000},
        headers=auth(admin_key),
    )
    assert big.status_code == 201, big.text[:300]


async def test_a_body_of_empty_objects_is_refused_before_decoding(
    client: ApiClient, send_key: str
) -> None:
    """Decoding makes ~70 bytes of memory of every 3-byte `{},`: such bodies are refused by
    counting, before anything is decoded."""
    template_id = await create_template(client.http, send_key)
    dense = (
        b'{"template_id":"%s","recipients":[' % template_id.encode()
        + b",".join([b"{}"] * 200_000)
        + b"]}"
    )
    response = await client.http.post(
        f"{V1}/batches",
        content=dense,
        headers={**auth(send_key), "Content-Type": "application/json"},
    )
    error = assert_error(response, 413, "payload_too_large")
    assert "objects and arrays" in error["message"]
    top = b"[" + b",".join([b"{}"] * 200_000) + b"]"
    response = await client.http.post(
        f"{V1}/templates",
        content=top,
        headers={**auth(send_key), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large")
    # Braces inside strings are not containers.
    ok = await client.http.post(
        f"{V1}/templates/{template_id}/render",
        json={"variables": {"name": "{[" * 100_000, "code": "[{{x}}]" * 10_000}},
        headers=auth(send_key),
    )
    assert ok.status_code == 200, ok.text[:300]


def test_console_tracebacks_do_not_render_local_variables(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The development console renderer once printed every frame's locals: a request's body
    nested 1,000 levels deep took minutes and gigabytes to render."""
    configure_logging(settings_factory(log_format="pretty", log_level="info"))
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    log = structlog.get_logger("test")

    def fails(payload: Any) -> None:
        marker = "local-" + "value-" + str(4242)  # noqa: F841 - a local to (not) render
        raise ValueError("boom")

    try:
        fails(nested(50))
    except ValueError:
        log.exception("unhandled_error")
    output = stream.getvalue()
    assert "boom" in output and "unhandled_error" in output
    assert "local-value-4242" not in output
    assert "'n'" not in output
