"""POST /emails (stored as a transactional batch), its refusals, suppression rules and
Idempotency-Key; GET /emails/:id and GET /emails for single emails and batch recipients;
the batch events endpoint's email filter. API only (no worker)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mailer.db import session_scope
from mailer.models import Attachment, Batch, Recipient, Template
from mailer.suppressions import service as suppressions
from tests.fixtures.client import ApiClient, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch

INLINE = {"to": "ann@example.com", "subject": "Reset", "html": "<p>Reset <b>now</b></p>"}


async def post_email(
    c: ApiClient, key: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await c.http.post("/api/v1/emails", json=body, headers={**auth(key), **headers})


async def stored(c: ApiClient) -> tuple[int, int, int, int]:
    """Rows of batches, recipients, templates and attachments."""
    async with session_scope(c.state.sessionmaker) as session:
        counts = []
        for model in (Batch, Recipient, Template, Attachment):
            counts.append(int(await session.scalar(select(func.count()).select_from(model)) or 0))
    return counts[0], counts[1], counts[2], counts[3]


async def test_inline_email_is_a_transactional_batch(client: ApiClient, send_key: str) -> None:
    response = await post_email(client, send_key, {**INLINE, "headers": {"X-Ref": "42"}})
    assert response.status_code == 202, response.text
    [item] = response.json()["data"]
    assert item["to"] == "ann@example.com" and item["status"] == "QUEUED"
    got = await client.http.get(f"/api/v1/emails/{item['id']}", headers=auth(send_key))
    assert got.status_code == 200, got.text
    message = got.json()
    assert message["status"] == "PENDING"
    assert message["to"] == "ann@example.com"
    assert message["subject"] == "Reset"
    assert message["templateId"] is None and message["templateVersion"] is None
    assert message["events"] == []
    async with session_scope(client.state.sessionmaker) as session:
        batch = await session.get(Batch, message["batchId"])
        assert batch is not None
        template = await session.get(Template, batch.template_id)
    assert batch.priority == "high" and batch.unsubscribe is False
    assert batch.respect_unsubscribe is False
    assert batch.headers == {"X-Ref": "42"}
    assert template is not None and template.inline
    # The inline template is nobody's to list or use.
    listed = await client.http.get("/api/v1/templates", headers=auth(send_key))
    assert all(t["id"] != template.id for t in listed.json()["data"])
    by_id = await client.http.get(f"/api/v1/templates/{template.id}", headers=auth(send_key))
    assert by_id.status_code == 404


async def test_a_list_of_addresses_gives_one_message_each(client: ApiClient, send_key: str) -> None:
    to = ["a@example.com", "B@Example.com", "a@example.com", "c@example.com"]
    response = await post_email(client, send_key, {**INLINE, "to": to, "text": "plain"})
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert [d["to"] for d in data] == ["a@example.com", "b@example.com", "c@example.com"]
    assert len({d["id"] for d in data}) == 3


async def test_camel_case_and_template(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    body = {
        "to": ["x@example.com"],
        "templateId": template_id,
        "variables": {"name": "Ann"},
        "replyTo": "help@example.com",
        "respectUnsubscribe": True,
    }
    response = await post_email(client, send_key, body)
    assert response.status_code == 202, response.text
    message_id = response.json()["data"][0]["id"]
    got = (await client.http.get(f"/api/v1/emails/{message_id}", headers=auth(send_key))).json()
    assert got["templateId"] == template_id and got["templateVersion"] == 1
    assert got["subject"] == "Welcome {{name}}"


def _attachment(size: int, name: str = "a.bin") -> dict[str, str]:
    return {
        "filename": name,
        "content": base64.b64encode(b"x" * size).decode(),
        "content_type": "application/octet-stream",
    }


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("no content", {"to": "a@example.com", "subject": "s"}, "html"),
    (
        "both contents",
        {**INLINE, "template_id": "01JAAAAAAAAAAAAAAAAAAAAAAA"},
        "template_id",
    ),
    ("no subject", {"to": "a@example.com", "text": "t"}, "subject"),
    ("too many", {**INLINE, "to": [f"u{i}@example.com" for i in range(51)]}, "to"),
    ("no address", {**INLINE, "to": []}, "to"),
    ("bad address", {**INLINE, "to": ["ok@example.com", "not-an-address"]}, "to[1]"),
    ("From header", {**INLINE, "headers": {"From": "x@example.com"}}, "headers.From"),
    (
        "List-Unsubscribe header",
        {**INLINE, "headers": {"list-unsubscribe": "<https://x>"}},
        "headers.list-unsubscribe",
    ),
    ("Message-ID header", {**INLINE, "headers": {"Message-ID": "<a@b>"}}, "headers.Message-ID"),
    ("header CRLF", {**INLINE, "headers": {"X-A": "a\r\nBcc: e@example.com"}}, "headers.X-A"),
    ("header name", {**INLINE, "headers": {"X A": "v"}}, "headers.X A"),
    (
        "bad base64",
        {**INLINE, "attachments": [{"filename": "a.txt", "content": "%%%"}]},
        "attachments[0].content",
    ),
    (
        "bad filename",
        {**INLINE, "attachments": [{**_attachment(3), "filename": 'a"b\r\n.txt'}]},
        "attachments[0].filename",
    ),
    (
        "bad content type",
        {**INLINE, "attachments": [{**_attachment(3), "content_type": "text/html; x=\r\n"}]},
        "attachments[0].content_type",
    ),
    (
        "oversized",
        {**INLINE, "attachments": [_attachment(6 * 2**20), _attachment(4 * 2**20 + 1)]},
        "attachments",
    ),
    ("subject CRLF", {**INLINE, "subject": "a\r\nBcc: x@example.com"}, "subject"),
    ("unknown template", {"to": "a@example.com", "template_id": "nope"}, "template_id"),
    (
        "subject with template",
        {"to": "a@example.com", "template_id": "nope", "subject": "s"},
        "subject",
    ),
    ("bad tag", {**INLINE, "tags": {"mailer_x": "1"}}, "tags"),
    ("send_at number", {**INLINE, "send_at": 99999999999}, "send_at"),
    ("bad from", {**INLINE, "from": "nobody"}, "from"),
    ("unknown field", {**INLINE, "cc": "x@example.com"}, "cc"),
    ("bad template syntax", {**INLINE, "html": "{{#if}}"}, "html"),
]


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in REFUSALS], ids=[r[0] for r in REFUSALS]
)
async def test_each_refusal_names_its_field_and_stores_nothing(
    client: ApiClient, send_key: str, body: dict[str, Any], field: str
) -> None:
    before = await stored(client)
    response = await post_email(client, send_key, body)
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert field in fields, fields
    assert await stored(client) == before


async def test_declared_variables_are_checked(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    before = await stored(client)
    response = await post_email(
        client, send_key, {"to": "a@example.com", "template_id": template_id, "variables": {}}
    )
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["variables.name"]
    wrong = {"to": "a@example.com", "template_id": template_id, "variables": {"name": 5}}
    response = await post_email(client, send_key, wrong)
    assert response.status_code == 422
    assert await stored(client) == before


async def test_inline_content_variables(client: ApiClient, send_key: str) -> None:
    body = {**INLINE, "html": "<p>Hi {{name}}</p>"}
    response = await post_email(client, send_key, body)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "variables.name"
    response = await post_email(client, send_key, {**body, "variables": {"name": "Ann"}})
    assert response.status_code == 202, response.text


async def test_unsubscribe_url_in_a_single_email_needs_unsubscribe(
    client: ApiClient, send_key: str
) -> None:
    """Transactional email has no unsubscribe link unless asked: content placing
    {{unsubscribe_url}} without it is a 422 naming `unsubscribe`, as for a batch."""
    body = {**INLINE, "html": "<a href='{{unsubscribe_url}}'>stop</a>"}
    response = await post_email(client, send_key, body)
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == ["unsubscribe"]
    response = await post_email(client, send_key, {**body, "unsubscribe": True})
    assert response.status_code == 202, response.text


async def test_suppression_rules(client: ApiClient, send_key: str) -> None:
    async with session_scope(client.state.sessionmaker) as session:
        await suppressions.add(session, ["bounced@example.com"], "BOUNCE")
        await suppressions.add(session, ["complained@example.com"], "COMPLAINT")
        await suppressions.add(session, ["unsub@example.com"], "UNSUBSCRIBE")
    to = ["bounced@example.com", "complained@example.com", "unsub@example.com", "ok@example.com"]
    response = await post_email(client, send_key, {**INLINE, "to": to})
    assert response.status_code == 202, response.text
    status = {d["to"]: d["status"] for d in response.json()["data"]}
    assert status == {
        "bounced@example.com": "SUPPRESSED",
        "complained@example.com": "SUPPRESSED",
        "unsub@example.com": "QUEUED",
        "ok@example.com": "QUEUED",
    }
    response = await post_email(client, send_key, {**INLINE, "to": to, "respect_unsubscribe": True})
    status = {d["to"]: d["status"] for d in response.json()["data"]}
    assert status["unsub@example.com"] == "SUPPRESSED" and status["ok@example.com"] == "QUEUED"
    only_suppressed = await post_email(client, send_key, {**INLINE, "to": "bounced@example.com"})
    [item] = only_suppressed.json()["data"]
    got = await client.http.get(f"/api/v1/emails/{item['id']}", headers=auth(send_key))
    assert got.json()["status"] == "SUPPRESSED"


async def test_idempotency_key(client: ApiClient, send_key: str) -> None:
    first = await post_email(client, send_key, INLINE, **{"Idempotency-Key": "k1"})
    assert first.status_code == 202
    again = await post_email(client, send_key, INLINE, **{"Idempotency-Key": "k1"})
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    before = await stored(client)
    other = await post_email(client, send_key, {**INLINE, "text": "x"}, **{"Idempotency-Key": "k1"})
    assert other.status_code == 409
    assert await stored(client) == before


async def test_concurrent_requests_with_one_idempotency_key_store_one_email(
    client: ApiClient, send_key: str
) -> None:
    """Inline content is written with its batch: a request that loses the race for the key
    leaves no template behind (on PostgreSQL one statement writes them all)."""
    before = await stored(client)
    responses = await asyncio.gather(
        *(post_email(client, send_key, INLINE, **{"Idempotency-Key": "race"}) for _ in range(4))
    )
    assert {r.status_code for r in responses} <= {202, 409}, [r.text for r in responses]
    accepted = [r.json() for r in responses if r.status_code == 202]
    assert accepted and all(body == accepted[0] for body in accepted)
    batches, recipients, templates, attachments = await stored(client)
    assert (batches, recipients, templates, attachments) == (
        before[0] + 1,
        before[1] + 1,
        before[2] + 1,
        before[3],
    )


async def test_attachments_are_stored(client: ApiClient, send_key: str) -> None:
    files = [
        _attachment(10, "one.bin"),
        {**_attachment(5, "two.txt"), "content_type": "text/plain"},
    ]
    response = await post_email(client, send_key, {**INLINE, "attachments": files})
    assert response.status_code == 202, response.text
    async with session_scope(client.state.sessionmaker) as session:
        rows = (
            await session.execute(
                select(Attachment.filename, Attachment.content_type, Attachment.content).order_by(
                    Attachment.position
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("one.bin", "application/octet-stream", b"x" * 10),
        ("two.txt", "text/plain", b"x" * 5),
    ]


async def test_lookup_and_search_cover_batch_recipients(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    batch = await post_batch(
        client.http, send_key, template_id, make_recipients(5), tags={"campaign": "spring"}
    )
    batch_id = batch.json()["id"]
    single = await post_email(client, send_key, {**INLINE, "to": "user3@example.com"})
    single_id = single.json()["data"][0]["id"]

    def get(params: dict[str, Any]) -> Any:
        return client.http.get("/api/v1/emails", params=params, headers=auth(send_key))

    by_to = (await get({"to": "USER3@example.com"})).json()
    single_batch = (
        await client.http.get(f"/api/v1/emails/{single_id}", headers=auth(send_key))
    ).json()["batchId"]
    # Newest first: the single email, then the batch's recipient.
    assert [m["id"] for m in by_to["data"]][:1] == [single_id]
    assert [m["batchId"] for m in by_to["data"]] == [single_batch, batch_id]
    assert len(by_to["data"]) == 2 and by_to["nextCursor"] is None

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"batch_id": batch_id, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await get(params)).json()
        seen.extend(m["to"] for m in page["data"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"user{i}@example.com" for i in reversed(range(5))]

    tagged = (await get({"tag": "campaign:spring"})).json()
    assert {m["batchId"] for m in tagged["data"]} == {batch_id} and len(tagged["data"]) == 5
    assert (await get({"tag": "campaign:autumn"})).json()["data"] == []
    pending = (await get({"status": "PENDING", "to": "user1@example.com"})).json()["data"]
    assert [m["to"] for m in pending] == ["user1@example.com"]
    assert (await get({"status": "SENT", "to": "user1@example.com"})).json()["data"] == []
    one = pending[0]
    got = (await client.http.get(f"/api/v1/emails/{one['id']}", headers=auth(send_key))).json()
    assert got["templateId"] == template_id and got["tags"] == {"campaign": "spring"}
    for bad in ({"status": "NOPE"}, {"tag": "nocolon"}, {"cursor": "x"}, {"to": "nobody"}):
        assert (await get(bad)).status_code == 422, bad
    for missing in ("999999999", "abc"):
        response = await client.http.get(f"/api/v1/emails/{missing}", headers=auth(send_key))
        assert response.status_code == 404


async def test_batch_events_email_filter(client: ApiClient, send_key: str) -> None:
    async with session_scope(client.state.sessionmaker) as session:
        await suppressions.add(session, ["user1@example.com", "user2@example.com"], "MANUAL")
    template_id = await create_template(client.http, send_key)
    batch = await post_batch(client.http, send_key, template_id, make_recipients(4))
    batch_id = batch.json()["id"]
    url = f"/api/v1/batches/{batch_id}/events"
    everything = (await client.http.get(url, headers=auth(send_key))).json()
    assert everything["total"] == 3  # QUEUED and two SUPPRESSED
    one = await client.http.get(url, params={"email": "User2@example.com"}, headers=auth(send_key))
    assert one.status_code == 200
    assert [e["email"] for e in one.json()["data"]] == ["user2@example.com"]
    bad = await client.http.get(url, params={"email": "nobody"}, headers=auth(send_key))
    assert bad.status_code == 422
