"""Batch options the probe got wrong: send_at beyond the storable range or given as a
number, a blank Idempotency-Key, user tags named like mailer's own, and `from`/`reply_to`
values that are not one address. Each is refused with 422 naming the field, nothing stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from mailer.config import ConfigError, load_settings
from mailer.db import session_scope
from mailer.models import Batch
from tests.fixtures.client import ApiClient
from tests.fixtures.errors import assert_error
from tests.fixtures.pipeline import create_template, make_recipients, post_batch


async def _batches(c: ApiClient) -> int:
    async with session_scope(c.state.sessionmaker) as session:
        return int((await session.execute(select(func.count()).select_from(Batch))).scalar_one())


def _names(response: Any, field: str) -> None:
    error = assert_error(response, 422)
    fields = [d["field"] for d in error["details"]]
    assert any(f.startswith(field) for f in fields), (field, error)


@pytest.mark.parametrize(
    "send_at",
    [
        "9999-12-31T23:59:59-23:59",  # year 10000 in UTC
        "9999-12-31T23:59:59Z",
        (datetime.now(UTC) + timedelta(days=400)).isoformat(),
        99999999999,  # a number: read as milliseconds (1973) until now
        1893456000,
        "1893456000",  # digits in a string: a Unix time to Pydantic
        "2030-01-01",  # a date without a time or a timezone
        "next week",
    ],
)
async def test_send_at_out_of_range_or_not_iso_8601(
    client: ApiClient, send_key: str, send_at: Any
) -> None:
    template_id = await create_template(client.http, send_key)
    response = await post_batch(
        client.http, send_key, template_id, make_recipients(1), send_at=send_at
    )
    _names(response, "send_at")
    for detail in response.json()["error"]["details"]:
        assert "+00:00" not in detail["message"]  # a time in a message ends in Z too
    assert await _batches(client) == 0


@pytest.mark.parametrize(
    "send_at", ["0001-01-01T00:00:00+23:59", "0001-01-01T00:00:00Z", "2001-02-03T04:05:06+01:00"]
)
async def test_send_at_in_the_past_means_now(
    client: ApiClient, send_key: str, send_at: str
) -> None:
    template_id = await create_template(client.http, send_key)
    before = datetime.now(UTC)
    response = await post_batch(
        client.http, send_key, template_id, make_recipients(1), send_at=send_at
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] != "SCHEDULED"
    assert datetime.fromisoformat(body["sendAt"]) >= before - timedelta(seconds=1)


async def test_send_at_within_a_year_is_scheduled(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    when = datetime.now(UTC) + timedelta(days=364)
    response = await post_batch(
        client.http, send_key, template_id, make_recipients(1), send_at=when.isoformat()
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "SCHEDULED"


@pytest.mark.parametrize("key", ["", " ", "\t"])
async def test_blank_idempotency_key(client: ApiClient, send_key: str, key: str) -> None:
    template_id = await create_template(client.http, send_key)
    response = await post_batch(
        client.http,
        send_key,
        template_id,
        make_recipients(1),
        headers={"Idempotency-Key": key},
    )
    _names(response, "header:Idempotency-Key")
    assert await _batches(client) == 0


@pytest.mark.parametrize("path", ["/api/v1/batches", "/api/v1/emails"])
async def test_idempotency_key_longer_than_255(client: ApiClient, send_key: str, path: str) -> None:
    """Both POSTs read the header in the route body (not as a FastAPI parameter): a key
    over 255 characters is a 422 naming it, checked after the API key (401 without one)."""
    template_id = await create_template(client.http, send_key)
    if path.endswith("batches"):
        body: dict[str, Any] = {"template_id": template_id, "recipients": make_recipients(1)}
    else:
        body = {"template_id": template_id, "to": "ann@example.com", "variables": {"name": "Ann"}}
    headers = {"Idempotency-Key": "k" * 256}
    refused = await client.http.post(
        path, json=body, headers={**headers, "Authorization": f"Bearer {send_key}"}
    )
    _names(refused, "header:Idempotency-Key")
    assert await _batches(client) == 0
    assert_error(await client.http.post(path, json=body, headers=headers), 401)
    taken = await client.http.post(
        path,
        json=body,
        headers={"Idempotency-Key": "k" * 255, "Authorization": f"Bearer {send_key}"},
    )
    assert taken.status_code in (201, 202), taken.text


async def test_both_posts_document_the_idempotency_key_header(client: ApiClient) -> None:
    document = (await client.http.get("/openapi.json")).json()
    for path in ("/api/v1/batches", "/api/v1/emails"):
        parameters = document["paths"][path]["post"]["parameters"]
        [header] = [p for p in parameters if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key"
        assert header["schema"]["maxLength"] == 255


@pytest.mark.parametrize("name", ["mailer_batch", "mailer_recipient", "Mailer_x", "MAILER_"])
async def test_mailer_tag_prefix_is_reserved(client: ApiClient, send_key: str, name: str) -> None:
    template_id = await create_template(client.http, send_key)
    response = await post_batch(
        client.http, send_key, template_id, make_recipients(1), tags={name: "x", "ok": "y"}
    )
    _names(response, "tags")
    assert await _batches(client) == 0


MALFORMED_SENDERS = [
    "Name <a@example.com>, b@evil.com",
    "bob@x.org <alice@example.org>",
    "a@example.com, b@example.com",
    "a@example.com b@example.com",
    "Name (comment) <a@example.com>",
    "Name <a@example.com> trailing",
    "Name <a@example.com",
    "<>",
]


@pytest.mark.parametrize("value", MALFORMED_SENDERS)
async def test_from_and_reply_to_must_be_one_address(
    client: ApiClient, send_key: str, value: str
) -> None:
    template_id = await create_template(client.http, send_key)
    for field, extra in (
        ("from", {"from": value}),
        ("reply_to", {"reply_to": value}),
        ("reply_to[1]", {"reply_to": ["ok@example.com", value]}),
    ):
        response = await post_batch(client.http, send_key, template_id, make_recipients(1), **extra)
        _names(response, field)
    assert await _batches(client) == 0


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("a@Example.com", "a@example.com"),
        ("Ann <ann@example.com>", "Ann <ann@example.com>"),
        ('"Acme, Inc." <acme@example.com>', '"Acme, Inc." <acme@example.com>'),
    ],
)
async def test_well_formed_senders_are_kept(
    client: ApiClient, send_key: str, value: str, stored: str
) -> None:
    template_id = await create_template(client.http, send_key)
    response = await post_batch(
        client.http, send_key, template_id, make_recipients(1), **{"from": value}
    )
    assert response.status_code == 201, response.text
    batch = await client.http.get(
        f"/api/v1/batches/{response.json()['id']}",
        headers={"Authorization": f"Bearer {send_key}"},
    )
    assert batch.json()["from"] == stored


@pytest.mark.parametrize("value", MALFORMED_SENDERS)
def test_mail_from_must_be_one_address(value: str) -> None:
    with pytest.raises(ConfigError, match="MAIL_FROM"):
        load_settings(_env_file=None, mail_from=value)


async def test_priority_high_puts_the_batch_in_the_transactional_lane(
    client: ApiClient, send_key: str
) -> None:
    template_id = await create_template(client.http, send_key)
    high = await post_batch(client.http, send_key, template_id, make_recipients(2), priority="high")
    bulk = await post_batch(client.http, send_key, template_id, make_recipients(2))
    assert high.status_code == 201 and bulk.status_code == 201, high.text
    async with session_scope(client.state.sessionmaker) as session:
        got = {b.id: b.priority for b in (await session.scalars(select(Batch))).all()}
    assert got == {high.json()["id"]: "high", bulk.json()["id"]: "bulk"}
    before = await _batches(client)
    wrong = await post_batch(
        client.http, send_key, template_id, make_recipients(2), priority="urgent"
    )
    _names(wrong, "priority")
    assert await _batches(client) == before
