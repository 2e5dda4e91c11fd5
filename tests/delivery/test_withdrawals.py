"""Cancel and suppression win over claimed mail: once `POST /batches/:id/cancel` or
`POST /admin/suppressions` has answered, no message of that batch (to that address) starts
to go to the provider, even a recipient a worker had already claimed.

A real SMTP server notes when each message's MAIL command arrived; a low SEND_RATE keeps
recipients waiting for their rate slot while the change is made. Both backends: SQLite
(in-process notices) and PostgreSQL + Redis (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mailer.db import session_scope
from mailer.delivery.withdrawals import (
    MAX_LISTED,
    Verdict,
    Withdrawals,
    announce_cancelled,
    announce_suppressed,
)
from mailer.models import Batch, Event, Recipient
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch, wait_batch
from tests.fixtures.smtp_server import SmtpTestServer

SEND_RATE = 4


async def _settle(c: ApiClient, batch_id: str, timeout: float = 60.0) -> dict[str, int]:
    """Wait until no recipient of the batch is claimed or waiting; its states by count."""
    deadline = time.monotonic() + timeout
    while True:
        async with session_scope(c.state.sessionmaker) as session:
            rows = await session.execute(
                select(Recipient.status, func.count())
                .where(Recipient.batch_id == batch_id)
                .group_by(Recipient.status)
            )
            states = {str(s): int(n) for s, n in rows.tuples()}
        if not any(s in states for s in ("PENDING", "SENDING", "RETRYING")):
            return states
        assert time.monotonic() < deadline, f"batch {batch_id} still unfinished: {states}"
        await asyncio.sleep(0.1)


async def _counters_and_events(c: ApiClient, batch_id: str) -> tuple[Batch, dict[str, int]]:
    async with session_scope(c.state.sessionmaker) as session:
        batch = await session.get(Batch, batch_id)
        rows = await session.execute(
            select(Event.type, func.count()).where(Event.batch_id == batch_id).group_by(Event.type)
        )
        events = {str(t): int(n) for t, n in rows.tuples()}
    assert batch is not None
    return batch, events


def _settings(settings_factory: Any, smtp: SmtpTestServer) -> Any:
    # One send at a time keeps the sends of several claims in the rate's queue before the
    # fix; the default concurrency is what production runs.
    return settings_factory(mail_transport="smtp", smtp_url=smtp.url(), send_rate=SEND_RATE)


async def test_no_message_starts_after_cancel_answered(settings_factory: Any) -> None:
    smtp = SmtpTestServer().start()
    try:
        settings = _settings(settings_factory, smtp)
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key("send")
            template_id = await create_template(c.http, key)
            recipients = make_recipients(60, prefix="cancel")
            batch = (await post_batch(c.http, key, template_id, recipients)).json()
            await smtp.wait_for_messages(3, timeout=30)
            response = await c.http.post(f"/api/v1/batches/{batch['id']}/cancel", headers=auth(key))
            answered_at = time.monotonic()
            assert response.status_code == 200, response.text
            states = await _settle(c, batch["id"])
            batch_row, events = await _counters_and_events(c, batch["id"])
    finally:
        smtp.stop()
    late = [m.rcpt_tos for m in smtp.messages if m.started_at > answered_at]
    assert late == [], f"{len(late)} messages started after the cancel answered"
    sent = len(smtp.messages)
    assert states == {"SENT": sent, "CANCELLED": 60 - sent}
    assert batch_row.status == "CANCELLED"
    assert (batch_row.sent_count, batch_row.cancelled_count) == (sent, 60 - sent)
    assert events.get("CANCELLED") == 60 - sent
    assert events.get("SENT") == sent


async def test_address_suppressed_mid_send_is_not_sent(settings_factory: Any) -> None:
    smtp = SmtpTestServer().start()
    try:
        settings = _settings(settings_factory, smtp)
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key("admin", admin=True)
            template_id = await create_template(c.http, key)
            recipients = make_recipients(40, prefix="supp")
            batch = (await post_batch(c.http, key, template_id, recipients)).json()
            received = await smtp.wait_for_messages(3, timeout=30)
            # The next recipients in line: some of them are claimed by now (before the fix
            # a claim covered WORKER_CONCURRENCY of them, sent over the next seconds).
            done = {a for m in received for a in m.rcpt_tos}
            targets = [r["email"] for r in recipients if r["email"] not in done][:12]
            response = await c.http.post(
                "/api/v1/admin/suppressions", json={"emails": targets}, headers=auth(key)
            )
            answered_at = time.monotonic()
            assert response.status_code == 201, response.text
            await wait_batch(c.http, key, batch["id"])
            states = await _settle(c, batch["id"])
            async with session_scope(c.state.sessionmaker) as session:
                rows = await session.execute(
                    select(Recipient.email, Recipient.status).where(
                        Recipient.batch_id == batch["id"], Recipient.email.in_(targets)
                    )
                )
                target_states = {str(e): str(s) for e, s in rows.tuples()}
            batch_row, events = await _counters_and_events(c, batch["id"])
    finally:
        smtp.stop()
    late = [m.rcpt_tos for m in smtp.messages if m.started_at > answered_at]
    assert not any(set(t) & set(targets) for t in late), late
    started_before = {a for m in smtp.messages for a in m.rcpt_tos if a in targets}
    for email in targets:
        expected = "SENT" if email in started_before else "SUPPRESSED"
        assert target_states[email] == expected, (email, target_states[email])
    suppressed = states.get("SUPPRESSED", 0)
    assert suppressed == len(targets) - len(started_before) > 0
    assert states == {"SENT": 40 - suppressed, "SUPPRESSED": suppressed}
    assert batch_row.status == "COMPLETED"
    assert (batch_row.sent_count, batch_row.suppressed_count) == (40 - suppressed, suppressed)
    assert events.get("SUPPRESSED") == suppressed


async def test_notices_reach_a_watcher_and_gaps_ask_the_database(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A committed cancel or suppression reaches the watcher; a rolled back one never does;
    whenever notices may have been missed, the verdict is to ask the database."""
    watcher = Withdrawals(engine)
    assert watcher.verdict("b", "a@example.com", watcher.mark()) is Verdict.ASK_DATABASE
    watcher.start()
    try:
        async with asyncio.timeout(10):
            while watcher.verdict("b", "a@example.com", watcher.mark()) is not Verdict.SEND:
                await asyncio.sleep(0.02)
        before = watcher.mark()
        with contextlib.suppress(RuntimeError):
            async with session_scope(sessionmaker) as session:
                await announce_cancelled(session, "rolled-back")
                raise RuntimeError("roll back")
        async with session_scope(sessionmaker) as session:
            await announce_cancelled(session, "b")
            await announce_suppressed(session, ["a@example.com"])
        async with asyncio.timeout(10):
            while watcher.verdict("b2", "a@example.com", before) is not Verdict.SUPPRESSED:
                await asyncio.sleep(0.02)
        assert watcher.verdict("b", "z@example.com", before) is Verdict.CANCELLED
        assert watcher.verdict("rolled-back", "z@example.com", before) is Verdict.SEND
        async with session_scope(sessionmaker) as session:
            await announce_suppressed(session, [f"u{i}@example.com" for i in range(MAX_LISTED + 1)])
        async with asyncio.timeout(10):
            while watcher.mark() == before:
                await asyncio.sleep(0.02)
        # Too many to list: messages claimed before ask the database, later ones need not.
        assert watcher.verdict("b2", "z@example.com", before) is Verdict.ASK_DATABASE
        assert watcher.verdict("b2", "z@example.com", watcher.mark()) is Verdict.SEND
    finally:
        await watcher.stop()
