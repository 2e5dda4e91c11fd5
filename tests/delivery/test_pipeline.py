"""Sending end to end, in-process (API + embedded worker): each transport, retries, permanent
failures, dead letters, throttling, suppression at send time, header injection.

Runs on SQLite + in-process queue and on PostgreSQL + BullMQ/Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailer.db import session_scope
from mailer.models import Recipient
from mailer.suppressions import service as suppressions
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.pipeline import (
    all_events,
    create_template,
    make_recipients,
    post_batch,
    wait_batch,
)
from tests.fixtures.ses_server import (
    SES_ACCESS_KEY,
    SES_SECRET_KEY,
    MotoSes,
    SesFailure,
    SesTestServer,
)
from tests.fixtures.smtp_server import SmtpTestServer


def ses_settings(settings_factory: Any, url: str, **extra: Any) -> Any:
    values = {
        "mail_transport": "ses",
        "aws_endpoint_url": url,
        "aws_access_key_id": SES_ACCESS_KEY,
        "aws_secret_access_key": SES_SECRET_KEY,
        "mail_from": "Sender <sender@example.com>",
        "send_rate": 0,
        **extra,
    }
    return settings_factory(**values)


async def statuses(c: ApiClient, batch_id: str) -> dict[str, str]:
    async with session_scope(c.state.sessionmaker) as session:
        result = await session.execute(
            select(Recipient.email, Recipient.status).where(Recipient.batch_id == batch_id)
        )
        return {email: status for email, status in result.tuples()}


async def send(c: ApiClient, key: str, count: int, **extra: Any) -> dict[str, Any]:
    template_id = await create_template(c.http, key)
    response = await post_batch(c.http, key, template_id, make_recipients(count), **extra)
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


async def test_1000_through_outbox(settings_factory: Any, tmp_path: Path) -> None:
    outbox = tmp_path / "box"
    settings = settings_factory(outbox_dir=outbox, worker_concurrency=20)
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key()
        out = await send(c, key, 1000)
        batch = await wait_batch(c.http, key, out["id"])
        assert batch["counts"]["SENT"] == 1000 and batch["counts"]["PENDING"] == 0
        files = list(outbox.glob("*.eml"))
        assert len(files) == 1000
        to = Counter(
            BytesParser(policy=default_policy).parsebytes(f.read_bytes())["To"] for f in files
        )
        assert set(to.values()) == {1} and len(to) == 1000
        async with session_scope(c.state.sessionmaker) as session:
            missing = await session.scalar(
                select(func.count())
                .select_from(Recipient)
                .where(Recipient.batch_id == out["id"], Recipient.provider_message_id.is_(None))
            )
        assert missing == 0
        sent_events = await all_events(c.http, key, out["id"], "SENT")
        assert len(sent_events) == 1000
        summary = (
            await c.http.get(f"/api/v1/batches/{out['id']}/summary", headers=auth(key))
        ).json()
        assert summary["counts"]["SENT"] == 1000
        assert summary["firstSentAt"] and summary["lastSentAt"]


async def test_1000_through_smtp(settings_factory: Any) -> None:
    with SmtpTestServer() as server:
        settings = settings_factory(
            mail_transport="smtp",
            smtp_url=server.url(),
            worker_concurrency=10,
            mail_from="Sender <sender@example.com>",
            unsubscribe_mailto="unsub@example.com",
        )
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key()
            out = await send(c, key, 1000, reply_to="help@example.com")
            batch = await wait_batch(c.http, key, out["id"])
        assert batch["counts"]["SENT"] == 1000
        assert Counter(a for m in server.messages for a in m.rcpt_tos) == Counter(
            {f"user{i}@example.com": 1 for i in range(1000)}
        )
        assert server.connections <= 10  # connections are reused
        message = server.messages_to("user7@example.com")[0].parsed()
        assert message["Subject"] == "Welcome N7"
        assert message["From"] == "Sender <sender@example.com>"
        assert message["Reply-To"] == "help@example.com"
        assert message["Message-ID"]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "/api/v1/unsubscribe/" in message["List-Unsubscribe"]
        assert "mailto:unsub@example.com" in message["List-Unsubscribe"]


async def test_1000_through_ses_moto(settings_factory: Any, moto_ses: MotoSes) -> None:
    await moto_ses.verify_identity("sender@example.com")
    settings = ses_settings(settings_factory, moto_ses.url, worker_concurrency=20)
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key()
        out = await send(c, key, 1000, tags={"campaign": "spring"})
        batch = await wait_batch(c.http, key, out["id"], timeout=120)
        assert batch["counts"]["SENT"] == 1000
        async with session_scope(c.state.sessionmaker) as session:
            result = await session.execute(
                select(Recipient.email, Recipient.provider_message_id).where(
                    Recipient.batch_id == out["id"]
                )
            )
            pmids = dict(result.tuples().all())
    message = moto_ses.sent_by_id(pmids["user3@example.com"])
    assert "user3@example.com" in str(message.destinations)


async def test_ses_message_shape(settings_factory: Any, ses_server: SesTestServer) -> None:
    settings = ses_settings(settings_factory, ses_server.url, ses_configuration_set="events")
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key()
        out = await send(c, key, 2, tags={"campaign": "spring"})
        await wait_batch(c.http, key, out["id"])
    received = ses_server.messages_to("user1@example.com")[0]
    assert received.request["ConfigurationSetName"] == "events"
    assert received.request["FromEmailAddress"] == "Sender <sender@example.com>"
    assert received.simple["Subject"]["Data"] == "Welcome N1"
    assert received.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received.tags["campaign"] == "spring"
    assert received.tags["mailer_batch"] == out["id"]


async def test_transient_failures_retry_then_succeed(settings_factory: Any) -> None:
    tries: Counter[str] = Counter()

    def policy(address: str) -> int | None:
        if address in ("user1@example.com", "user2@example.com"):
            tries[address] += 1
            return 451 if tries[address] <= 2 else None
        return None

    with SmtpTestServer(rcpt_policy=policy) as server:
        settings = settings_factory(
            mail_transport="smtp", smtp_url=server.url(), job_attempts=3, job_backoff_delay=50
        )
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key()
            out = await send(c, key, 5)
            batch = await wait_batch(c.http, key, out["id"])
            retries = await all_events(c.http, key, out["id"], "RETRY")
        assert batch["counts"]["SENT"] == 5 and batch["counts"]["FAILED"] == 0
        assert {e["email"] for e in retries} == {"user1@example.com", "user2@example.com"}
        assert len(retries) == 4
        assert server.rcpt_counts["user1@example.com"] == 3
        assert server.rcpt_counts["user0@example.com"] == 1  # never re-sent


async def test_permanent_failure_fails_at_once(settings_factory: Any) -> None:
    with SmtpTestServer(rcpt_policy={"user1@example.com": 550}) as server:
        settings = settings_factory(mail_transport="smtp", smtp_url=server.url())
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key()
            out = await send(c, key, 3)
            batch = await wait_batch(c.http, key, out["id"])
            failed = await all_events(c.http, key, out["id"], "FAILED")
        assert batch["counts"]["FAILED"] == 1 and batch["counts"]["SENT"] == 2
        assert server.rcpt_counts["user1@example.com"] == 1
        assert failed[0]["email"] == "user1@example.com"
        assert "550" in failed[0]["data"]["error"]


async def test_exhausted_attempts_dead_letter_then_retry(settings_factory: Any) -> None:
    broken = {"user1@example.com"}

    def policy(address: str) -> int | None:
        return 451 if address in broken else None

    with SmtpTestServer(rcpt_policy=policy) as server:
        # The reconciler runs throughout (the tests' 1 s interval), the batch's enqueue and
        # the retry's backoff included: the chunk keeps one job and JOB_ATTEMPTS attempts.
        settings = settings_factory(
            mail_transport="smtp", smtp_url=server.url(), job_attempts=2, job_backoff_delay=20
        )
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key(admin=True)
            out = await send(c, key, 3)
            batch = await wait_batch(c.http, key, out["id"])
            assert batch["counts"]["FAILED"] == 1
            assert server.rcpt_counts["user1@example.com"] == 2
            letters = (await c.http.get("/api/v1/admin/dead-letters", headers=auth(key))).json()
            assert letters["total"] == 1
            assert letters["data"][0]["recipientCount"] == 1
            assert letters["data"][0]["attempts"] == 2
            assert "451" in letters["data"][0]["error"]

            broken.clear()  # the provider recovers
            retried = await c.http.post(
                "/api/v1/admin/dead-letters/retry", json={}, headers=auth(key)
            )
            assert retried.json()["recipients"] == 1
            batch = await wait_batch(c.http, key, out["id"])
            assert batch["counts"]["SENT"] == 3 and batch["counts"]["FAILED"] == 0
            letters = (await c.http.get("/api/v1/admin/dead-letters", headers=auth(key))).json()
            assert letters["total"] == 0
        assert len(server.messages_to("user1@example.com")) == 1


async def test_throttling_does_not_use_attempts(
    settings_factory: Any, ses_server: SesTestServer
) -> None:
    ses_server.fail_next(SesFailure.throttle(retry_after=0.2), times=3)
    settings = ses_settings(settings_factory, ses_server.url, job_attempts=1)
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key()
        out = await send(c, key, 10)
        batch = await wait_batch(c.http, key, out["id"])
    assert batch["counts"]["SENT"] == 10 and batch["counts"]["FAILED"] == 0
    assert Counter(a for m in ses_server.messages for a in m.to) == Counter(
        {f"user{i}@example.com": 1 for i in range(10)}
    )


async def test_account_suspended_pauses_without_failing(
    settings_factory: Any, ses_server: SesTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ses_server.fail_next(SesFailure.account_suspended(), times=1)
    settings = ses_settings(settings_factory, ses_server.url, job_attempts=1)
    async with api_client(settings, embedded_worker=True) as c:
        # The worker pauses every worker once it has released the chunk's unsent claims.
        paused = asyncio.Event()
        pause_all = c.state.queue.pause_all

        async def observed_pause_all(ms: int) -> None:
            await pause_all(ms)
            paused.set()

        monkeypatch.setattr(c.state.queue, "pause_all", observed_pause_all)
        key = await c.make_key()
        out = await send(c, key, 2)
        await asyncio.wait_for(paused.wait(), 20)
        states = await statuses(c, out["id"])
        for _ in range(500):  # a send that went out meanwhile is recorded in the background
            if "SENDING" not in states.values():
                break
            await asyncio.sleep(0.01)
            states = await statuses(c, out["id"])
    # paused: nothing failed, nothing lost; the refused recipient waits for the pause to end
    assert ses_server.requests >= 1
    assert "FAILED" not in states.values()
    assert "PENDING" in states.values()
    assert set(states.values()) <= {"PENDING", "SENT"}


async def test_suppressed_after_queueing_is_not_sent(settings_factory: Any) -> None:
    with SmtpTestServer() as server:
        settings = settings_factory(mail_transport="smtp", smtp_url=server.url())
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key()
            send_at = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
            out = await send(c, key, 3, send_at=send_at)
            assert out["status"] == "SCHEDULED"
            async with session_scope(c.state.sessionmaker) as session:
                await suppressions.add(session, ["user2@example.com"], "MANUAL", {})
            batch = await wait_batch(c.http, key, out["id"], timeout=30)
        assert batch["counts"]["SENT"] == 2 and batch["counts"]["SUPPRESSED"] == 1
        assert server.rcpt_counts["user2@example.com"] == 0


async def test_header_injection_in_variables_is_never_sent(settings_factory: Any) -> None:
    with SmtpTestServer() as server:
        settings = settings_factory(mail_transport="smtp", smtp_url=server.url())
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key()
            template_id = await create_template(c.http, key)
            recipients = [
                {"email": "ok@example.com", "variables": {"name": "Ann"}},
                {"email": "evil@example.com", "variables": {"name": "x\r\nBcc: all@example.com"}},
            ]
            nul = [{"email": "nul@example.com", "variables": {"name": "x\x00y"}}]
            refused = await post_batch(c.http, key, template_id, nul)
            assert refused.status_code == 422  # NUL can't be stored (PostgreSQL): never queued
            assert refused.json()["error"]["details"][0]["field"] == "recipients[0].variables.name"
            out = (await post_batch(c.http, key, template_id, recipients)).json()
            batch = await wait_batch(c.http, key, out["id"])
            states = await statuses(c, out["id"])
        assert states == {"ok@example.com": "SENT", "evil@example.com": "FAILED"}
        assert batch["counts"]["FAILED"] == 1
        assert [a for m in server.messages for a in m.rcpt_tos] == ["ok@example.com"]


async def test_two_workers_never_send_twice(settings_factory: Any) -> None:
    from mailer.worker.runtime import create_worker

    with SmtpTestServer() as server:
        settings = settings_factory(
            mail_transport="smtp", smtp_url=server.url(), worker_concurrency=5, chunk_size=20
        )
        async with api_client(settings, embedded_worker=True) as c:
            from mailer.queue.factory import build_queue

            # a second worker with its own queue connection (BullMQ) or the same queue (local)
            queue = build_queue(settings) if settings.redis_url else c.state.queue
            second = await create_worker(settings, c.state.sessionmaker, queue)
            second.start()
            try:
                key = await c.make_key()
                out = await send(c, key, 600)
                batch = await wait_batch(c.http, key, out["id"], timeout=90)
            finally:
                await second.stop()
                if queue is not c.state.queue:
                    await queue.close()
        assert batch["counts"]["SENT"] == 600
        counts = Counter(a for m in server.messages for a in m.rcpt_tos)
        assert len(counts) == 600 and set(counts.values()) == {1}


async def test_cancel_stops_unsent(settings_factory: Any) -> None:
    slow = SesTestServer(latency=0.05)
    with slow:
        settings = ses_settings(settings_factory, slow.url, worker_concurrency=2)
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key()
            out = await send(c, key, 200)
            await slow.wait_for_messages(5)
            cancelled = await c.http.post(f"/api/v1/batches/{out['id']}/cancel", headers=auth(key))
            assert cancelled.status_code == 200
            await asyncio.sleep(0.5)
            states = Counter((await statuses(c, out["id"])).values())
        assert states["CANCELLED"] > 0
        assert states["SENT"] + states["CANCELLED"] == 200
        assert len(slow.messages) == states["SENT"]
