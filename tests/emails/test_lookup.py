"""GET /emails: every filter and their combinations, page by page, against the answer
computed from all the rows. Both ways of reading (batch by batch for a filter that matches
few batches, the primary key otherwise) are run, including two batches whose recipient ids
interleave (written at the same time) and a cursor in the middle of a batch."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from mailer.db import session_scope
from mailer.emails import repository
from mailer.ids import new_id
from mailer.models import Batch, Recipient
from tests.fixtures.client import ApiClient, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch

NOW = datetime.now(UTC)
SINCE = NOW - timedelta(days=1)


def status_of(recipient_id: int) -> str:
    if recipient_id % 5 == 1:
        return "DELIVERED"
    if recipient_id % 7 == 2:
        return "FAILED"
    if recipient_id % 11 == 3:
        return "COMPLAINED"
    return "PENDING"


async def build(client: ApiClient, key: str) -> dict[str, str]:
    """Batches with tags and ages, single emails, statuses spread by id, and two batches
    whose ids interleave. Their ids by name."""
    template_id = await create_template(client.http, key)
    names: dict[str, str] = {}
    for name, count, tags in (
        ("spring", 30, {"campaign": "spring", "kind": "news"}),
        ("autumn", 12, {"campaign": "autumn", "kind": "news"}),
        ("plain", 8, {}),
    ):
        answer = await post_batch(client.http, key, template_id, make_recipients(count), tags=tags)
        assert answer.status_code == 201, answer.text
        names[name] = answer.json()["id"]
    for _ in range(3):
        body = {"to": "user3@example.com", "subject": "S", "text": "t", "tags": {"kind": "receipt"}}
        answer = await client.http.post("/api/v1/emails", json=body, headers=auth(key))
        assert answer.status_code == 202, answer.text
    async with session_scope(client.state.sessionmaker) as session:
        top = int(await session.scalar(select(Recipient.id).order_by(Recipient.id.desc())) or 0)
        template = await session.get(Batch, names["plain"])
        assert template is not None
        # Two batches written at the same time: their ids alternate, each in seq order.
        for name, offset in (("left", 1), ("right", 2)):
            batch_id = new_id()
            names[name] = batch_id
            session.add(
                Batch(
                    id=batch_id,
                    template_id=template.template_id,
                    template_version_id=template.template_version_id,
                    tags={"kind": "news", "side": name},
                    total_recipients=9,
                    created_at=NOW - timedelta(days=3 if name == "left" else 0),
                )
            )
            await session.flush()
            for seq in range(9):
                session.add(
                    Recipient(
                        id=top + offset + 2 * seq,
                        batch_id=batch_id,
                        seq=seq,
                        email=f"user{seq}@example.com",
                        variables={},
                    )
                )
        await session.flush()
        await session.execute(
            update(Batch).where(Batch.id == names["spring"]).values(created_at=NOW - timedelta(2))
        )
        for rid in (await session.scalars(select(Recipient.id))).all():
            await session.execute(
                update(Recipient).where(Recipient.id == rid).values(status=status_of(rid))
            )
    return names


async def all_rows(client: ApiClient) -> list[dict[str, Any]]:
    async with session_scope(client.state.sessionmaker) as session:
        found = await session.execute(
            select(
                Recipient.id,
                Recipient.email,
                Recipient.status,
                Batch.id,
                Batch.tags,
                Batch.created_at,
            ).join(Batch, Batch.id == Recipient.batch_id)
        )
        return [
            {
                "id": r[0],
                "to": r[1],
                "status": r[2],
                "batch_id": r[3],
                "tags": r[4],
                "created": r[5],
            }
            for r in found.all()
        ]


def expected(rows: list[dict[str, Any]], query: dict[str, str]) -> list[str]:
    def keep(row: dict[str, Any]) -> bool:
        if "to" in query and row["to"] != query["to"]:
            return False
        if "status" in query and row["status"] != query["status"]:
            return False
        if "batch_id" in query and row["batch_id"] != query["batch_id"]:
            return False
        if "tag" in query:
            name, value = query["tag"].split(":")
            if row["tags"].get(name) != value:
                return False
        return "since" not in query or row["created"] >= datetime.fromisoformat(query["since"])

    return [str(r["id"]) for r in sorted(rows, key=lambda r: -r["id"]) if keep(r)]


async def pages(client: ApiClient, key: str, query: dict[str, str], limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        params = {**query, "limit": str(limit)}
        if cursor is not None:
            params["cursor"] = cursor
        answer = await client.http.get("/api/v1/emails", params=params, headers=auth(key))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["data"]) <= limit
        seen.extend(m["id"] for m in body["data"])
        cursor = body["nextCursor"]
        if cursor is None:
            return seen
        assert len(body["data"]) == limit
        assert len(seen) < 1000, "pagination does not end"


@pytest.mark.parametrize("walk_limit", [repository.BATCH_WALK_LIMIT, 1], ids=["batches", "pkey"])
async def test_every_filter_and_combination_page_by_page(
    client: ApiClient, send_key: str, walk_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository, "BATCH_WALK_LIMIT", walk_limit)
    names = await build(client, send_key)
    rows = await all_rows(client)
    assert {r["status"] for r in rows} == {"DELIVERED", "FAILED", "COMPLAINED", "PENDING"}
    options: dict[str, list[str | None]] = {
        "to": [None, "user3@example.com"],
        "status": [None, "DELIVERED", "FAILED"],
        "batch_id": [None, names["spring"], names["left"]],
        "tag": [None, "kind:news", "campaign:spring"],
        "since": [None, SINCE.isoformat()],
    }
    queries = [
        {k: v for k, v in zip(options, values, strict=True) if v is not None}
        for values in itertools.product(*options.values())
    ]
    queries += [
        {"status": "COMPLAINED"},
        {"status": "PENDING", "tag": "kind:news"},
        {"tag": "kind:receipt"},
        {"tag": "kind:nothing"},
        {"tag": "side:right", "status": "PENDING"},
        {"batch_id": names["right"]},
        {"batch_id": "01NOSUCHBATCH0000000000000"},
        {"since": (NOW + timedelta(days=1)).isoformat()},
    ]
    nonempty = 0
    for query in queries:
        want = expected(rows, query)
        nonempty += bool(want)
        for limit in (4, 50):
            assert await pages(client, send_key, query, limit) == want, (query, limit)
    assert nonempty > len(queries) // 3  # the oracle is not vacuous


async def test_ids_follow_seq_within_a_batch(client: ApiClient, send_key: str) -> None:
    """Reading a batch by (batch_id, seq) as newest first relies on this: a batch's
    recipients are written in seq order."""
    template_id = await create_template(client.http, send_key)
    answer = await post_batch(client.http, send_key, template_id, make_recipients(300))
    batch_id = answer.json()["id"]
    async with session_scope(client.state.sessionmaker) as session:
        found = await session.execute(
            select(Recipient.seq, Recipient.id)
            .where(Recipient.batch_id == batch_id)
            .order_by(Recipient.seq)
        )
        ids = [int(r[1]) for r in found.all()]
    assert len(ids) == 300 and ids == sorted(ids)
