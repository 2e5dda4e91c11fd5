"""The reputation guard: complaints over the threshold pause bulk sending until resumed."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from sqlalchemy import select

from mailer.db import session_scope
from mailer.models import Recipient
from mailer.worker.runtime import Worker
from tests.fixtures.client import api_client, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch, wait_batch
from tests.fixtures.ses_server import SES_ACCESS_KEY, SES_SECRET_KEY, SesTestServer


def complaint(message_id: str, email: str) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": email}],
            "complaintFeedbackType": "abuse",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "feedbackId": f"fb-{message_id}",
        },
        "mail": {"messageId": message_id, "destination": [email]},
    }


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def test_complaints_pause_bulk_until_resumed(
    settings_factory: Any, ses_server: SesTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_factory(
        mail_transport="ses",
        aws_endpoint_url=ses_server.url,
        aws_access_key_id=SES_ACCESS_KEY,
        aws_secret_access_key=SES_SECRET_KEY,
        mail_from="sender@example.com",
        send_rate=0,
        sns_verify=False,
        reputation_min_sends=20,
        complaint_rate_threshold=0.05,
        reconcile_interval=0.5,
    )
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key(admin=True)
        h = auth(key)
        template_id = await create_template(c.http, key)
        first = (await post_batch(c.http, key, template_id, make_recipients(40))).json()
        await wait_batch(c.http, key, first["id"])
        async with session_scope(c.state.sessionmaker) as session:
            rows = (
                (
                    await session.execute(
                        select(Recipient.email, Recipient.provider_message_id).limit(3)
                    )
                )
                .tuples()
                .all()
            )
        for email, message_id in rows:
            response = await c.http.post(
                "/api/v1/webhooks/ses",
                content=json.dumps(complaint(str(message_id), email)),
                headers={"Content-Type": "text/plain"},
            )
            assert response.status_code == 200

        async def paused() -> bool:
            state = (await c.http.get("/api/v1/admin/sending", headers=h)).json()
            return bool(state["paused"])

        await wait_until(paused)
        # The worker re-reads the pause at most once a second: wait until it sees it.
        worker = c.state.extras["worker"]
        assert isinstance(worker, Worker)
        pause = worker.processor.pause
        await wait_until(pause.is_paused)
        # From now on, record what the worker finds when a bulk chunk asks.
        held_back: list[bool] = []
        is_paused = pause.is_paused

        async def observed_is_paused() -> bool:
            value = await is_paused()
            held_back.append(value)
            return value

        monkeypatch.setattr(pause, "is_paused", observed_is_paused)
        state = (await c.http.get("/api/v1/admin/sending", headers=h)).json()
        assert "complaint rate" in state["reason"]
        ready = (await c.http.get("/api/v1/ready")).json()
        assert ready["checks"]["sending"]["paused"] is True

        sent_before = len(ses_server.messages)
        bulk = (
            await post_batch(c.http, key, template_id, make_recipients(10, prefix="bulk"))
        ).json()
        transactional = (
            await post_batch(
                c.http, key, template_id, make_recipients(2, prefix="tx"), unsubscribe=False
            )
        ).json()
        await wait_batch(c.http, key, transactional["id"])

        async def bulk_chunk_held_back() -> bool:
            return any(held_back)

        await wait_until(bulk_chunk_held_back)
        held = (await c.http.get(f"/api/v1/batches/{bulk['id']}", headers=h)).json()
        assert held["status"] == "SENDING"
        assert held["counts"]["SENT"] == 0
        assert len(ses_server.messages) == sent_before + 2

        resumed = await c.http.post("/api/v1/admin/sending/resume", headers=h)
        assert resumed.json()["paused"] is False
        done = await wait_batch(c.http, key, bulk["id"], timeout=30)
        assert done["counts"]["SENT"] == 10
        # still not paused: only sends after the resume are judged
        assert not await paused()
    bulk_received = [a for m in ses_server.messages for a in m.to if a.startswith("bulk")]
    assert sorted(bulk_received) == sorted(f"bulk{i}@example.com" for i in range(10))


async def test_manual_pause_and_cli(client: Any, admin_key: str, send_key: str) -> None:
    h = auth(admin_key)
    assert (
        await client.http.get("/api/v1/admin/sending", headers=auth(send_key))
    ).status_code == 403
    paused = await client.http.post(
        "/api/v1/admin/sending/pause", json={"reason": "maintenance"}, headers=h
    )
    assert paused.json()["paused"] is True and paused.json()["reason"] == "maintenance"
    state = (await client.http.get("/api/v1/admin/sending", headers=h)).json()
    assert state["paused"] is True
    resumed = (await client.http.post("/api/v1/admin/sending/resume", headers=h)).json()
    assert resumed["paused"] is False and resumed["resumedAt"]
