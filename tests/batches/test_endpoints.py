"""The batches API: the Node service's example, validation, dedupe, suppression, idempotency,
scheduling, cancel, events and summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from mailer.db import session_scope
from mailer.models import ApiKey, Batch, Recipient
from mailer.suppressions import service as suppressions
from tests.fixtures.client import ApiClient, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch


async def test_original_spec_batch_example(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(
        client.http,
        send_key,
        name="Welcome Email",
        subject=None,
        html="<h1>Welcome {{name}}!</h1>",
        text="Welcome {{name}}!",
        variables={"name": {"type": "string"}},
    )
    body = {
        "template_id": template_id,
        "recipients": [
            {"email": "user1@example.com", "variables": {"name": "John"}},
            {"email": "user2@example.com", "variables": {"name": "Jane"}},
        ],
        "metadata": {"campaign": "welcome_2024"},
    }
    response = await client.http.post("/api/v1/batches", json=body, headers=auth(send_key))
    assert response.status_code == 201, response.text
    out = response.json()
    assert out["status"] == "SENDING"
    assert out["id"] and out["createdAt"]
    assert out["recipients"] == 2
    # durable before the answer
    async with session_scope(client.state.sessionmaker) as session:
        count = await session.scalar(
            select(func.count()).select_from(Recipient).where(Recipient.batch_id == out["id"])
        )
        batch = await session.get(Batch, out["id"])
    assert count == 2
    assert batch is not None and batch.metadata_ == {"campaign": "welcome_2024"}

    got = await client.http.get(f"/api/v1/batches/{out['id']}", headers=auth(send_key))
    assert got.status_code == 200
    assert got.json()["total"] == 2
    assert got.json()["metadata"] == {"campaign": "welcome_2024"}


async def test_camel_case_aliases_accepted(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    response = await client.http.post(
        "/api/v1/batches",
        json={"templateId": template_id, "recipients": make_recipients(1), "replyTo": "a@b.com"},
        headers=auth(send_key),
    )
    assert response.status_code == 201, response.text


async def test_invalid_recipients_are_listed_by_index_and_nothing_is_written(
    client: ApiClient, send_key: str
) -> None:
    template_id = await create_template(client.http, send_key)
    recipients: list[Any] = make_recipients(5)
    recipients[1]["email"] = "not-an-address"
    recipients[3]["email"] = "bad\r\nBcc: victim@example.com"
    recipients[4]["variables"] = {"name": 42}
    recipients.append("just a string")
    response = await post_batch(client.http, send_key, template_id, recipients)
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    indices = sorted({d["index"] for d in details})
    assert indices == [1, 3, 4, 5]
    assert any(d["field"] == "recipients[4].variables.name" for d in details)
    assert {d["field"] for d in details if d["index"] == 5} == {"recipients[5]"}
    async with session_scope(client.state.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(Batch)) == 0
        assert await session.scalar(select(func.count()).select_from(Recipient)) == 0


async def test_missing_required_variable_rejected(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    response = await post_batch(
        client.http, send_key, template_id, [{"email": "a@example.com", "variables": {}}]
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "recipients[0].variables.name"


async def test_error_list_is_capped_at_100(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    recipients = [{"email": f"bad{i}", "variables": {"name": "x"}} for i in range(250)]
    response = await post_batch(client.http, send_key, template_id, recipients)
    assert response.status_code == 422
    body = response.json()["error"]
    assert len(body["details"]) == 100
    assert "250" in body["message"]


async def test_unknown_template_is_422_naming_the_field(client: ApiClient, send_key: str) -> None:
    # A 404 would read like a missing route: the body named something that does not exist.
    response = await post_batch(client.http, send_key, "nope", make_recipients(1))
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "template_id"
    camel = await client.http.post(
        "/api/v1/batches",
        json={"templateId": "nope", "recipients": make_recipients(1)},
        headers=auth(send_key),
    )
    assert camel.status_code == 422
    assert camel.json()["error"]["details"][0]["field"] == "templateId"


async def test_wrong_types_and_limits(
    client: ApiClient, send_key: str, settings_factory: Any
) -> None:
    template_id = await create_template(client.http, send_key)
    for body, field in [
        ({"template_id": template_id, "recipients": "x"}, "recipients"),
        ({"template_id": template_id, "recipients": []}, "recipients"),
        ({"template_id": 5, "recipients": make_recipients(1)}, "template_id"),
        (
            {"template_id": template_id, "recipients": make_recipients(1), "tags": {"a b": "c"}},
            "tags",
        ),
        (
            {"template_id": template_id, "recipients": make_recipients(1), "send_at": "tomorrow"},
            "send_at",
        ),
        ({"template_id": template_id, "recipients": make_recipients(1), "extra": 1}, "extra"),
        ([1, 2], "body"),
    ]:
        response = await client.http.post("/api/v1/batches", json=body, headers=auth(send_key))
        assert response.status_code == 422, (body, response.text)
        fields = [d["field"] for d in response.json()["error"]["details"]]
        assert any(f.startswith(field) for f in fields), (field, fields)


async def test_too_many_recipients(settings_factory: Any) -> None:
    from tests.fixtures.client import api_client

    async with api_client(settings_factory(max_batch_recipients=3)) as c:
        key = await c.make_key()
        template_id = await create_template(c.http, key)
        response = await post_batch(c.http, key, template_id, make_recipients(4))
    assert response.status_code == 422
    assert "MAX_BATCH_RECIPIENTS" in response.json()["error"]["details"][0]["message"]


async def test_duplicates_are_sent_once_and_counted(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    recipients = [*make_recipients(3), {"email": "USER1@Example.com", "variables": {"name": "dup"}}]
    response = await post_batch(client.http, send_key, template_id, recipients)
    assert response.status_code == 201
    assert response.json()["recipients"] == 3
    assert response.json()["duplicates"] == 1


async def test_suppressed_addresses_recorded_not_queued(client: ApiClient, send_key: str) -> None:
    async with session_scope(client.state.sessionmaker) as session:
        await suppressions.add(session, ["user1@example.com"], "MANUAL", {"test": True})
    template_id = await create_template(client.http, send_key)
    response = await post_batch(client.http, send_key, template_id, make_recipients(3))
    out = response.json()
    assert out["suppressed"] == 1 and out["queued"] == 2
    async with session_scope(client.state.sessionmaker) as session:
        result = await session.execute(
            select(Recipient.email, Recipient.status).where(Recipient.batch_id == out["id"])
        )
        statuses = {email: status for email, status in result.tuples()}
    assert statuses["user1@example.com"] == "SUPPRESSED"
    assert statuses["user0@example.com"] == "PENDING"
    events = (
        await client.http.get(
            f"/api/v1/batches/{out['id']}/events",
            params={"type": "SUPPRESSED"},
            headers=auth(send_key),
        )
    ).json()
    assert events["total"] == 1 and events["data"][0]["email"] == "user1@example.com"


async def test_all_suppressed_batch_completes_at_once(client: ApiClient, send_key: str) -> None:
    async with session_scope(client.state.sessionmaker) as session:
        await suppressions.add(session, ["user0@example.com"], "MANUAL", {})
    template_id = await create_template(client.http, send_key)
    out = (await post_batch(client.http, send_key, template_id, make_recipients(1))).json()
    assert out["status"] == "COMPLETED"


async def test_idempotency_key_replay_and_conflict(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    recipients = make_recipients(2)
    headers = {"Idempotency-Key": "order-42"}
    first = await post_batch(client.http, send_key, template_id, recipients, headers=headers)
    second = await post_batch(client.http, send_key, template_id, recipients, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    other = await post_batch(
        client.http, send_key, template_id, make_recipients(3), headers=headers
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    async with session_scope(client.state.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(Batch)) == 1


async def test_idempotency_keys_are_per_api_key(client: ApiClient, send_key: str) -> None:
    other_key = await client.make_key("other")
    template_id = await create_template(client.http, send_key)
    headers = {"Idempotency-Key": "same"}
    a = await post_batch(client.http, send_key, template_id, make_recipients(1), headers=headers)
    b = await post_batch(client.http, other_key, template_id, make_recipients(1), headers=headers)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


async def test_scheduled_batch(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    out = (
        await post_batch(client.http, send_key, template_id, make_recipients(2), send_at=send_at)
    ).json()
    assert out["status"] == "SCHEDULED"
    got = (await client.http.get(f"/api/v1/batches/{out['id']}", headers=auth(send_key))).json()
    assert got["status"] == "SCHEDULED" and got["sendAt"] is not None


async def test_cancel(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    out = (
        await post_batch(client.http, send_key, template_id, make_recipients(3), send_at=send_at)
    ).json()
    cancelled = await client.http.post(
        f"/api/v1/batches/{out['id']}/cancel", headers=auth(send_key)
    )
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "CANCELLED"
    assert body["counts"]["CANCELLED"] == 3
    again = await client.http.post(f"/api/v1/batches/{out['id']}/cancel", headers=auth(send_key))
    assert again.status_code == 409
    events = (
        await client.http.get(
            f"/api/v1/batches/{out['id']}/events",
            params={"type": "CANCELLED"},
            headers=auth(send_key),
        )
    ).json()
    assert events["total"] == 3


async def test_list_batches_and_pagination(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    for _ in range(3):
        await post_batch(client.http, send_key, template_id, make_recipients(1))
    page = (
        await client.http.get("/api/v1/batches", params={"limit": 2}, headers=auth(send_key))
    ).json()
    assert page["total"] == 3 and len(page["data"]) == 2 and page["limit"] == 2
    rest = (
        await client.http.get(
            "/api/v1/batches", params={"limit": 2, "offset": 2}, headers=auth(send_key)
        )
    ).json()
    assert len(rest["data"]) == 1
    bad = await client.http.get("/api/v1/batches", params={"limit": 5000}, headers=auth(send_key))
    assert bad.status_code == 422


async def test_unknown_batch_404_everywhere(client: ApiClient, send_key: str) -> None:
    for path in ("", "/events", "/summary"):
        response = await client.http.get(f"/api/v1/batches/nope{path}", headers=auth(send_key))
        assert response.status_code == 404, path
    response = await client.http.post("/api/v1/batches/nope/cancel", headers=auth(send_key))
    assert response.status_code == 404


async def test_sql_metacharacters_stored_verbatim(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    name = "Robert'); DROP TABLE recipients;--"
    out = (
        await post_batch(
            client.http,
            send_key,
            template_id,
            [{"email": "bobby@example.com", "variables": {"name": name}}],
            metadata={"note": "' OR 1=1 --"},
        )
    ).json()
    async with session_scope(client.state.sessionmaker) as session:
        variables = await session.scalar(
            select(Recipient.variables).where(Recipient.batch_id == out["id"])
        )
        batch = await session.get(Batch, out["id"])
    assert variables == {"name": name}
    assert batch is not None and batch.metadata_ == {"note": "' OR 1=1 --"}


@pytest.mark.postgres_only
@pytest.mark.parametrize("size", [2, 2500], ids=["one-statement", "streamed"])
async def test_concurrent_requests_with_one_idempotency_key(
    client: ApiClient, send_key: str, size: int
) -> None:
    """Two requests with the same key in flight at once: the second waits on the first's
    uncommitted row, then answers 409 (retrying gets the replay); one batch is stored."""
    import asyncio

    import orjson

    from mailer.auth.principal import Principal
    from mailer.batches import service
    from mailer.batches.ingest import parse_request
    from mailer.errors import Conflict

    template_id = await create_template(client.http, send_key)
    body = orjson.dumps({"template_id": template_id, "recipients": make_recipients(size)})
    async with session_scope(client.state.sessionmaker) as session:
        principal = Principal(
            key_id=str(await session.scalar(select(ApiKey.id).limit(1))),
            name="k",
            scopes=frozenset({"send"}),
        )

    async def create(session: Any) -> service.CreateResult:
        return await service.create_batch(
            session,
            principal,
            parse_request(body, max_recipients=100_000),
            body_hash=service.request_hash(body),
            idempotency_key="same",
            chunk_size=100,
            queue=client.state.queue,
        )

    async with client.state.sessionmaker() as first, client.state.sessionmaker() as second:
        await create(first)  # inserted, not committed
        racing = asyncio.create_task(create(second))
        await asyncio.sleep(0.3)
        assert not racing.done()  # blocked on the first's row
        await first.commit()
        with pytest.raises(Conflict):
            await racing
        await second.rollback()
    async with session_scope(client.state.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(Batch)) == 1
