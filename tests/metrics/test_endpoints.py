"""GET /api/v1/metrics, GET /api/v1/admin/metrics?hours=N and GET /metrics through the real
app, on counts written to the database beforehand."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailer.config import Settings
from mailer.db import session_scope
from mailer.events import bump_metrics, minute_bucket
from mailer.metrics import get_metrics
from mailer.models import SystemState
from mailer.models.enums import BatchStatus
from mailer.queue.base import ChunkJob
from mailer.worker.heartbeats import worker_heartbeat
from tests.fixtures.client import ApiClient, auth
from tests.fixtures.errors import assert_error
from tests.metrics.helpers import (
    add_batches,
    add_dead_letter,
    family_names,
    metrics_client,
    parse_time,
    samples,
)
from tests.metrics.helpers import (
    metrics_app as metrics_app,  # re-exported for readers looking for the app
)

# (offset from now, counts): now, 30 min ago, 3 h ago, 2 days ago.
WRITES: list[tuple[timedelta, dict[str, int]]] = [
    (timedelta(0), {"sent": 5}),
    (timedelta(minutes=30), {"sent": 3, "bounced": 1}),
    (timedelta(hours=3), {"sent": 7, "failed": 2, "suppressed": 4}),
    (timedelta(days=2), {"delivered": 4, "complained": 1}),
]
KINDS = ("sent", "failed", "bounced", "complained", "delivered", "suppressed")


@pytest.fixture
async def mclient(settings: Settings) -> AsyncIterator[ApiClient]:
    async with metrics_client(settings) as c:
        yield c


async def _write_counts(c: ApiClient) -> datetime:
    now = datetime.now(UTC)
    async with session_scope(c.state.sessionmaker) as session:
        for offset, counts in WRITES:
            await bump_metrics(session, counts, at=now - offset)
    return now


async def _write_state(c: ApiClient) -> None:
    async with session_scope(c.state.sessionmaker) as session:
        ids = await add_batches(
            session, [BatchStatus.SENDING, BatchStatus.COMPLETED, BatchStatus.COMPLETED]
        )
        await add_dead_letter(session, ids[0])
        await worker_heartbeat(session, "worker-host:42", {"transport": "outbox"})
    await c.state.queue.enqueue([ChunkJob("b1", 0, 10), ChunkJob("b1", 10, 20)])


async def test_public_summary(mclient: ApiClient) -> None:
    admin = await mclient.make_key("admin", admin=True)
    await _write_counts(mclient)
    await _write_state(mclient)

    response = await mclient.http.get("/api/v1/metrics")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body["totals"][k] for k in KINDS} == {
        "sent": 15,
        "failed": 2,
        "bounced": 1,
        "complained": 1,
        "delivered": 4,
        "suppressed": 4,
    }
    assert {k: body["lastHour"][k] for k in KINDS} == {
        **dict.fromkeys(KINDS, 0),
        "sent": 8,
        "bounced": 1,
    }
    assert body["queueDepth"] == 2
    assert body["workersAlive"] == 1
    assert body["batches"] == {"SCHEDULED": 0, "SENDING": 1, "COMPLETED": 2, "CANCELLED": 0}
    assert body["deadLetters"] == 1
    assert body["sendingPaused"] is False
    assert body["uptimeSeconds"] >= 0
    assert parse_time(body["generatedAt"]) <= datetime.now(UTC)
    # The database holds addresses (recipients, the dead letter's error) and an API key.
    assert "@" not in response.text
    assert admin not in response.text


async def test_metrics_require_key(settings_factory: Any) -> None:
    async with metrics_client(settings_factory(metrics_require_key=True)) as c:
        key = await c.make_key("send")
        for path in ("/api/v1/metrics", "/metrics"):
            assert_error(await c.http.get(path), 401, "unauthorized")
            assert_error(await c.http.get(path, headers=auth("0" * 64)), 401, "unauthorized")
            assert (await c.http.get(path, headers=auth(key))).status_code == 200


async def test_metrics_are_open_by_default(mclient: ApiClient) -> None:
    assert (await mclient.http.get("/api/v1/metrics")).status_code == 200
    assert (await mclient.http.get("/metrics")).status_code == 200


def _expected(now: datetime, granularity: str) -> dict[datetime, Counter[str]]:
    """What each bucket must hold, from WRITES."""
    out: dict[datetime, Counter[str]] = defaultdict(Counter)
    for offset, counts in WRITES:
        start = minute_bucket(now - offset)
        if granularity == "hour":
            start = start.replace(minute=0)
        out[start].update(counts)
    return out


@pytest.mark.parametrize(
    ("hours", "granularity", "sent", "included"),
    [
        (1, "minute", 8, {"now", "30m"}),
        (6, "minute", 15, {"now", "30m", "3h"}),
        (48, "hour", 15, {"now", "30m", "3h"}),  # 2 days ago is just before the window
        (72, "hour", 15, {"now", "30m", "3h", "2d"}),
    ],
)
async def test_admin_metrics_buckets(
    mclient: ApiClient, hours: int, granularity: str, sent: int, included: set[str]
) -> None:
    admin = await mclient.make_key("admin", admin=True)
    now = await _write_counts(mclient)
    response = await mclient.http.get(
        "/api/v1/admin/metrics", params={"hours": hours}, headers=auth(admin)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["hours"] == hours
    assert body["granularity"] == granularity
    step = timedelta(minutes=1) if granularity == "minute" else timedelta(hours=1)
    buckets = body["buckets"]
    assert len(buckets) == (hours * 60 if granularity == "minute" else hours)
    starts = [parse_time(b["start"]) for b in buckets]
    assert starts == [parse_time(body["start"]) + step * i for i in range(len(buckets))]
    assert parse_time(body["end"]) == starts[-1] + step

    expected = _expected(now, granularity)
    for bucket, start in zip(buckets, starts, strict=True):
        assert {k: bucket[k] for k in KINDS} == {k: expected[start][k] for k in KINDS}, start
    names = {"now": timedelta(0), "30m": timedelta(minutes=30)}
    names |= {"3h": timedelta(hours=3), "2d": timedelta(days=2)}
    window = {n for n, off in names.items() if starts[0] <= now - off < starts[-1] + step}
    assert window == included
    assert body["totals"]["sent"] == sent
    assert body["totals"]["complained"] == (1 if "2d" in included else 0)
    assert body["bounceRate"] == pytest.approx(1 / sent)
    assert body["complaintRate"] == pytest.approx((1 if "2d" in included else 0) / sent)
    assert body["reputation"] == {
        "paused": False,
        "reason": None,
        "since": None,
        "resumedAt": None,
    }


async def test_admin_metrics_defaults_to_24_hours_and_null_rates(mclient: ApiClient) -> None:
    admin = await mclient.make_key("admin", admin=True)
    response = await mclient.http.get("/api/v1/admin/metrics", headers=auth(admin))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["hours"], body["granularity"], len(body["buckets"])) == (24, "hour", 24)
    assert body["bounceRate"] is None
    assert body["complaintRate"] is None


@pytest.mark.parametrize("hours", ["0", "721", "-1", "abc"])
async def test_admin_metrics_rejects_hours_out_of_range(mclient: ApiClient, hours: str) -> None:
    admin = await mclient.make_key("admin", admin=True)
    response = await mclient.http.get(
        "/api/v1/admin/metrics", params={"hours": hours}, headers=auth(admin)
    )
    assert_error(response, 422, "validation_error")


async def test_admin_metrics_needs_an_admin_key(mclient: ApiClient) -> None:
    send = await mclient.make_key("send")
    assert_error(await mclient.http.get("/api/v1/admin/metrics"), 401, "unauthorized")
    response = await mclient.http.get("/api/v1/admin/metrics", headers=auth(send))
    assert_error(response, 403, "insufficient_scope")


async def test_sending_paused_is_reported_everywhere(mclient: ApiClient) -> None:
    admin = await mclient.make_key("admin", admin=True)
    since = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    async with session_scope(mclient.state.sessionmaker) as session:
        session.add(
            SystemState(
                key="sending_paused",
                value={
                    "paused": True,
                    "reason": "bounce rate 5.1% > 4%",
                    "since": since.isoformat(),
                },
            )
        )
    admin_body = (await mclient.http.get("/api/v1/admin/metrics", headers=auth(admin))).json()
    assert admin_body["reputation"]["paused"] is True
    assert admin_body["reputation"]["reason"] == "bounce rate 5.1% > 4%"
    assert parse_time(admin_body["reputation"]["since"]) == since
    assert (await mclient.http.get("/api/v1/metrics")).json()["sendingPaused"] is True
    text = (await mclient.http.get("/metrics")).text
    assert samples(text)[("mailer_sending_paused", ())] == 1


async def test_prometheus_exposition(mclient: ApiClient) -> None:
    await _write_state(mclient)
    metrics = get_metrics(mclient.state)
    metrics.observe_counts({"sent": 3, "failed": 1}, "smtp")
    metrics.observe_webhook_counts({"bounced": 2, "complained": 1, "delivered": 0})
    metrics.observe_ses_event(True, 2)
    metrics.observe_ses_event(True, 0)
    metrics.observe_ses_event(False, 0)
    metrics.observe_send_latency("smtp", 0.02)
    metrics.observe_send_latency("smtp", 3.0)
    metrics.observe_rate_wait(0.25)
    metrics.observe_rate_wait(0.0)
    metrics.observe_rate_wait(0.5)
    metrics.observe_request("GET", "/api/v1/batches/{batch_id}", 404, 12.5)

    response = await mclient.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert {
        "mailer_messages",
        "mailer_send_duration_seconds",
        "mailer_queue_depth",
        "mailer_dead_letters",
        "mailer_http_request_duration_seconds",
        "mailer_rate_limiter_wait_seconds",
        "mailer_rate_limiter_waits",
        "mailer_sending_paused",
        "mailer_batches",
        "mailer_workers_alive",
    } <= family_names(text)
    got = samples(text)
    sent = ("mailer_messages_total", (("event", "sent"), ("transport", "smtp")))
    assert got[sent] == 3
    assert got[("mailer_messages_total", (("event", "failed"), ("transport", "smtp")))] == 1
    assert got[("mailer_messages_total", (("event", "bounced"), ("transport", "ses")))] == 2
    assert got[("mailer_messages_total", (("event", "complained"), ("transport", "ses")))] == 1
    assert ("mailer_messages_total", (("event", "delivered"), ("transport", "ses"))) not in got
    assert got[("mailer_ses_events_total", (("message", "ours"),))] == 2
    assert got[("mailer_ses_events_total", (("message", "not_ours"),))] == 1
    assert got[("mailer_ses_addresses_ignored_total", ())] == 2
    smtp = (("transport", "smtp"),)
    assert got[("mailer_send_duration_seconds_count", smtp)] == 2
    assert got[("mailer_send_duration_seconds_sum", smtp)] == pytest.approx(3.02)
    assert got[("mailer_send_duration_seconds_bucket", (("le", "0.025"), *smtp))] == 1
    assert got[("mailer_send_duration_seconds_bucket", (("le", "5.0"), *smtp))] == 2
    assert got[("mailer_rate_limiter_wait_seconds_total", ())] == pytest.approx(0.75)
    assert got[("mailer_rate_limiter_waits_total", ())] == 2
    route = (("method", "GET"), ("route", "/api/v1/batches/{batch_id}"), ("status", "404"))
    assert got[("mailer_http_request_duration_seconds_count", route)] == 1
    assert got[("mailer_http_request_duration_seconds_sum", route)] == pytest.approx(0.0125)
    # Database and queue gauges, read at scrape time.
    assert got[("mailer_queue_depth", ())] == 2
    assert got[("mailer_dead_letters", ())] == 1
    assert got[("mailer_workers_alive", ())] == 1
    assert got[("mailer_sending_paused", ())] == 0
    assert got[("mailer_batches", (("status", "SENDING"),))] == 1
    assert got[("mailer_batches", (("status", "COMPLETED"),))] == 2
    assert got[("mailer_batches", (("status", "SCHEDULED"),))] == 0


async def test_each_app_has_its_own_registry(settings: Settings) -> None:
    async with metrics_client(settings) as first:
        get_metrics(first.state).observe_counts({"sent": 4}, "outbox")
        text = (await first.http.get("/metrics")).text
        assert (
            samples(text)[("mailer_messages_total", (("event", "sent"), ("transport", "outbox")))]
            == 4
        )
    async with metrics_client(settings) as second:
        text = (await second.http.get("/metrics")).text
        key = ("mailer_messages_total", (("event", "sent"), ("transport", "outbox")))
        assert key not in samples(text)
