"""Hand-written PostgreSQL statements (mailer.db.pg) run inside the session's transaction,
also when they are its first statement: SQLAlchemy's asyncpg adapter begins lazily, before
its own first statement, so without `pg.connection` beginning it a raw statement sent first
committed on its own. A unit of work that asks for `single_statement_writes` runs without
a transaction, as it asked."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from mailer.config import Settings
from mailer.db import session_scope
from mailer.db.dialect import single_statement_writes
from mailer.delivery.recorder import Outcome, Recorder
from mailer.events import bump_metrics
from mailer.models import Batch, Event, Metric, Recipient, WebhookDelivery
from mailer.models.enums import MetricKind, RecipientStatus
from mailer.webhook_endpoints import repository as endpoints_repository
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch


class _Boom(Exception):
    pass


async def _metric_total(settings_sessionmaker: Any, kind: str) -> int:
    async with session_scope(settings_sessionmaker) as session:
        total = await session.scalar(select(func.sum(Metric.count)).where(Metric.kind == kind))
    return int(total or 0)


async def _bump_then_fail(sessionmaker: Any, *, single_statement: bool) -> None:
    """pg.bump_metrics as the unit of work's first statement, then a failure."""
    try:
        async with session_scope(sessionmaker) as session:
            if single_statement:
                assert await single_statement_writes(session)
            await bump_metrics(session, {MetricKind.COMPLAINED: 7})
            raise _Boom
    except _Boom:
        return
    raise AssertionError("the unit of work did not fail")


@pytest.mark.postgres_only
async def test_a_raw_statement_sent_first_rolls_back_with_its_unit_of_work(
    settings: Settings,
) -> None:
    async with api_client(settings) as c:
        sessionmaker = c.state.sessionmaker
        before = await _metric_total(sessionmaker, MetricKind.COMPLAINED)
        await _bump_then_fail(sessionmaker, single_statement=False)
        assert await _metric_total(sessionmaker, MetricKind.COMPLAINED) == before

        # Asked for: a single-statement unit of work commits its statement on its own.
        await _bump_then_fail(sessionmaker, single_statement=True)
        assert await _metric_total(sessionmaker, MetricKind.COMPLAINED) == before + 7


async def _admin_with_endpoint(c: ApiClient, event_type: str) -> str:
    """An admin key, and an enabled webhook endpoint that takes `event_type`."""
    key = await c.make_key(admin=True)
    created = await c.http.post(
        "/api/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hooks", "events": [event_type]},
        headers=auth(key),
    )
    assert created.status_code == 201, created.text
    return key


async def test_outcomes_and_their_outbox_rows_commit_together(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox insert fails once after the outcome statement: the recorder's retry must
    not apply the outcome twice (counters, events) nor lose its webhook row."""
    settings = settings_factory(webhook_allow_private=True)
    async with api_client(settings) as c:
        key = await _admin_with_endpoint(c, "email.sent")
        template_id = await create_template(c.http, key)
        batch = (await post_batch(c.http, key, template_id, make_recipients(1))).json()
        async with session_scope(c.state.sessionmaker) as session:
            recipient = await session.scalar(
                select(Recipient).where(Recipient.batch_id == batch["id"])
            )
        assert recipient is not None

        real_insert = endpoints_repository.insert_deliveries
        failures = [_Boom("outbox insert failed")]

        async def insert_once_failing(*args: Any, **kwargs: Any) -> None:
            if failures:
                raise failures.pop()
            await real_insert(*args, **kwargs)

        monkeypatch.setattr(endpoints_repository, "insert_deliveries", insert_once_failing)
        recorder = Recorder(c.state.sessionmaker)
        recorder.start()
        try:
            await recorder.record(
                Outcome(
                    recipient.id,
                    batch["id"],
                    recipient.email,
                    RecipientStatus.SENT,
                    1,
                    provider_message_id="pmid-1",
                )
            )
        finally:
            await recorder.stop()
        assert not failures  # the fault did happen

        async with session_scope(c.state.sessionmaker) as session:
            sent_count = await session.scalar(
                select(Batch.sent_count).where(Batch.id == batch["id"])
            )
            sent_events = await session.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.recipient_id == recipient.id, Event.type == "SENT")
            )
            hooks = await session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.recipient_id == recipient.id)
            )
    assert (sent_count, sent_events, hooks) == (1, 1, 1)


async def test_a_batch_whose_outbox_rows_fail_is_not_created(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /batches with a suppressed recipient and an endpoint taking email.suppressed:
    the batch, its recipients and events and the outbox rows commit together. When the
    outbox insert fails, no batch exists, so a client that retries after the error does not
    create (and send) it twice."""
    settings = settings_factory(webhook_allow_private=True)
    async with api_client(settings) as c:
        key = await _admin_with_endpoint(c, "email.suppressed")
        held = await c.http.post(
            "/api/v1/admin/suppressions",
            json={"emails": ["held@example.com"], "reason": "MANUAL"},
            headers=auth(key),
        )
        assert held.status_code < 300, held.text
        template_id = await create_template(c.http, key)

        async def failing_insert(*args: Any, **kwargs: Any) -> None:
            raise _Boom("outbox insert failed")

        monkeypatch.setattr(endpoints_repository, "insert_deliveries", failing_insert)
        recipients = make_recipients(2)
        recipients[0]["email"] = "held@example.com"
        try:
            response = await post_batch(c.http, key, template_id, recipients)
            assert response.status_code >= 500, response.text
        except _Boom:
            pass  # the test client may hand the app's exception through
        async with session_scope(c.state.sessionmaker) as session:
            batches = await session.scalar(select(func.count()).select_from(Batch))
    assert batches == 0
