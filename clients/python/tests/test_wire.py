"""What the clients put on the wire for the calls a live server cannot check yet (the
single-email endpoints), and the cursor iterator: against the scripted HTTP server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailer_client import NO_RETRIES, AsyncMailerClient, Attachment, MailerClient
from tests.scripted_server import Answer, ScriptedServer

ROOT = Path(__file__).resolve().parents[1]


def _email(i: int) -> dict[str, Any]:
    return {"id": f"e{i}", "status": "SENT", "to": f"u{i}@example.com", "createdAt": None}


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


def test_send_email_body(scripted: ScriptedServer, tmp_path: Path) -> None:
    answer = {"data": [{"id": "e1", "to": "a@example.com", "status": "QUEUED"}]}
    scripted.answer(Answer(202, answer))
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 \x00\x01")
    with MailerClient(scripted.url, "k", retry=NO_RETRIES) as c:
        sent = c.emails.send(
            ["a@example.com"],
            from_="Shop <shop@example.com>",
            subject="Hi",
            html="<p>x</p>",
            reply_to="help@example.com",
            headers={"X-Entity-Ref-ID": "42"},
            tags={"kind": "receipt"},
            metadata={"order": 7},
            send_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
            attachments=[
                Attachment.from_path(report),
                {"filename": "a.txt", "content": base64.b64encode(b"a").decode()},
            ],
            unsubscribe=False,
            respect_unsubscribe=True,
        )
    assert sent.data[0].id == "e1"
    request = scripted.received[0]
    assert (request.method, request.path) == ("POST", "/api/v1/emails")
    assert request.headers["idempotency-key"]
    assert json.loads(request.body) == {
        "to": ["a@example.com"],
        "from": "Shop <shop@example.com>",
        "subject": "Hi",
        "html": "<p>x</p>",
        "reply_to": "help@example.com",
        "headers": {"X-Entity-Ref-ID": "42"},
        "tags": {"kind": "receipt"},
        "metadata": {"order": 7},
        "send_at": "2030-01-02T03:04:05Z",
        "attachments": [
            {
                "filename": "report.pdf",
                "content": base64.b64encode(b"%PDF-1.4 \x00\x01").decode(),
                "content_type": "application/pdf",
            },
            {"filename": "a.txt", "content": "YQ=="},
        ],
        "unsubscribe": False,
        "respect_unsubscribe": True,
    }


def test_a_template_email_sends_only_what_is_given(scripted: ScriptedServer) -> None:
    scripted.answer(Answer(202, {"data": [{"id": "e1", "to": "a@x.io", "status": "QUEUED"}]}))
    with MailerClient(scripted.url, "k", retry=NO_RETRIES) as c:
        c.emails.send("a@x.io", template_id="t1", variables={"name": "Ada"})
    assert json.loads(scripted.received[0].body) == {
        "to": "a@x.io",
        "template_id": "t1",
        "variables": {"name": "Ada"},
    }


def test_email_iterator_follows_the_cursor(scripted: ScriptedServer) -> None:
    scripted.answer(
        Answer(200, {"data": [_email(1), _email(2)], "nextCursor": "c2"}),
        Answer(200, {"data": [_email(3)], "next_cursor": "c3"}),
        Answer(200, {"data": [], "nextCursor": None}),
    )
    with MailerClient(scripted.url, "k", retry=NO_RETRIES) as c:
        ids = [e.id for e in c.emails.iter(status="SENT", tag="kind:x", page_size=2)]
    assert ids == ["e1", "e2", "e3"]
    paths = [r.path for r in scripted.received]
    assert paths == [
        "/api/v1/emails?limit=2&status=SENT&tag=kind%3Ax",
        "/api/v1/emails?limit=2&cursor=c2&status=SENT&tag=kind%3Ax",
        "/api/v1/emails?limit=2&cursor=c3&status=SENT&tag=kind%3Ax",
    ]


async def test_async_email_iterator_stops_without_a_cursor(scripted: ScriptedServer) -> None:
    scripted.answer(Answer(200, {"data": [_email(1)], "nextCursor": None}))
    async with AsyncMailerClient(scripted.url, "k", retry=NO_RETRIES) as c:
        ids = [e.id async for e in c.emails.iter(to="u1@example.com")]
    assert ids == ["e1"]
    assert len(scripted.received) == 1


def test_email_detail_reads_camel_case(scripted: ScriptedServer) -> None:
    detail = {
        "id": "e1",
        "status": "SENT",
        "from": "shop@example.com",
        "to": "a@example.com",
        "batchId": None,
        "providerMessageId": "pm-1",
        "sentAt": "2030-01-01T00:00:01Z",
        "lastError": None,
        "events": [{"id": 1, "type": "SENT", "createdAt": "2030-01-01T00:00:01Z", "data": {}}],
        "somethingNew": 1,
    }
    scripted.answer(Answer(200, detail))
    with MailerClient(scripted.url, "k", retry=NO_RETRIES) as c:
        email = c.emails.get("e1")
    assert email.from_ == "shop@example.com"
    assert email.provider_message_id == "pm-1"
    assert email.sent_at == datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert email.events is not None
    assert email.events[0].type == "SENT"
    assert email.model_extra == {"somethingNew": 1}  # a field added later is kept


def test_path_segments_are_escaped(scripted: ScriptedServer) -> None:
    scripted.answer(Answer(204, raw=b""))
    with MailerClient(scripted.url, "k", retry=NO_RETRIES) as c:
        c.suppressions.remove("a/b+c@example.com")
    assert scripted.received[0].path == "/api/v1/admin/suppressions/a%2Fb%2Bc%40example.com"


def test_the_sync_client_is_generated_from_the_async_one() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
