"""MetricsRegistry: the observe hooks, multiprocess exposition across real processes, and
(once the lead has wired them) the hooks in the middleware and the worker."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import Message, Receive, Scope, Send

import mailer.delivery.chunk
from mailer.config import Settings
from mailer.delivery.recorder import Outcome
from mailer.metrics import MetricsRegistry
from mailer.metrics.prometheus import MULTIPROC_ENV
from mailer.models.enums import RecipientStatus
from tests.fixtures.client import auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch, wait_batch
from tests.metrics.helpers import (
    HTTP_HOOK_WIRED,
    OUTCOMES_HOOK_WIRED,
    metrics_app,
    metrics_client,
    samples,
)

ROOT = Path(__file__).resolve().parents[2]
LATENCY_HOOK_WIRED = "observe_send_latency" in inspect.getsource(mailer.delivery.chunk)


def _text(metrics: MetricsRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def _outcome(status: RecipientStatus, n: int = 1) -> Outcome:
    return Outcome(n, "batch", f"r{n}@example.com", status, attempts=1)


def test_outcomes_are_counted_by_event_and_transport() -> None:
    metrics = MetricsRegistry()
    observe = metrics.outcome_observer("ses")
    observe([_outcome(RecipientStatus.SENT, i) for i in range(4)])
    observe([_outcome(RecipientStatus.RETRYING), _outcome(RecipientStatus.FAILED)])
    metrics.observe_outcomes([_outcome(RecipientStatus.SUPPRESSED)], "smtp")
    got = samples(_text(metrics))

    def total(event: str, transport: str) -> float | None:
        key = (("event", event), ("transport", transport))
        return got.get(("mailer_messages_total", key))

    assert total("sent", "ses") == 4
    assert total("retried", "ses") == 1
    assert total("failed", "ses") == 1
    assert total("suppressed", "smtp") == 1
    assert total("suppressed", "ses") is None


def test_request_labels_are_bounded() -> None:
    metrics = MetricsRegistry()
    metrics.observe_request("get", "/api/v1/health", 200, 3.0)
    metrics.observe_request("BREW", "unmatched", 405, 1.0)
    got = samples(_text(metrics))
    health = (("method", "GET"), ("route", "/api/v1/health"), ("status", "200"))
    assert got[("mailer_http_request_duration_seconds_count", health)] == 1
    other = (("method", "OTHER"), ("route", "unmatched"), ("status", "405"))
    assert got[("mailer_http_request_duration_seconds_count", other)] == 1
    # Any method token a client sends is one more request of an existing label, and the
    # registry keeps nothing per raw method.
    for i in range(1000):
        metrics.observe_request(f"BREW{i}", "unmatched", 405, 1.0)
        metrics.observe_request("get" if i % 2 else "Get", "/api/v1/health", 200, 1.0)
    got = samples(_text(metrics))
    assert got[("mailer_http_request_duration_seconds_count", other)] == 1001
    assert got[("mailer_http_request_duration_seconds_count", health)] == 1001
    assert len(metrics._http_children) == 2


def test_registries_are_independent() -> None:
    first, second = MetricsRegistry(), MetricsRegistry()
    first.observe_rate_wait(1.5)
    assert samples(_text(first))[("mailer_rate_limiter_wait_seconds_total", ())] == 1.5
    assert samples(_text(second))[("mailer_rate_limiter_wait_seconds_total", ())] == 0


def test_multiproc_dir_set_after_import_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prometheus_client chose in-memory values when it was imported; files would never be
    # written, so the registry stays single-process rather than expose nothing.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    metrics = MetricsRegistry()
    assert metrics.multiprocess_dir is None
    metrics.observe_counts({"sent": 2}, "ses")
    assert (
        samples(_text(metrics))[
            ("mailer_messages_total", (("event", "sent"), ("transport", "ses")))
        ]
        == 2
    )


RECORD = textwrap.dedent(
    """
    import sys
    from mailer.metrics import MetricsRegistry

    metrics = MetricsRegistry()
    assert metrics.multiprocess_dir is not None
    n = int(sys.argv[1])
    metrics.observe_counts({"sent": n}, "ses")
    metrics.observe_send_latency("ses", 0.02 * n)
    metrics.observe_rate_wait(0.5)
    metrics.observe_request("POST", "/api/v1/batches", 201, 10.0)
    """
)
EXPOSE = textwrap.dedent(
    """
    import sys
    from prometheus_client import generate_latest
    from mailer.metrics import MetricsRegistry

    sys.stdout.write(generate_latest(MetricsRegistry().registry).decode())
    """
)


def test_multiprocess_exposition_sums_processes(tmp_path: Path) -> None:
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    recorders = [
        subprocess.Popen([sys.executable, "-c", RECORD, str(n)], env=env, cwd=ROOT) for n in (3, 4)
    ]
    for proc in recorders:
        assert proc.wait(timeout=60) == 0
    exposed = subprocess.run(
        [sys.executable, "-c", EXPOSE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = samples(exposed.stdout)
    ses = (("transport", "ses"),)
    assert got[("mailer_messages_total", (("event", "sent"), *ses))] == 7
    assert got[("mailer_send_duration_seconds_count", ses)] == 2
    assert got[("mailer_send_duration_seconds_sum", ses)] == pytest.approx(0.14)
    assert got[("mailer_rate_limiter_wait_seconds_total", ())] == 1.0
    assert got[("mailer_rate_limiter_waits_total", ())] == 2
    route = (("method", "POST"), ("route", "/api/v1/batches"), ("status", "201"))
    assert got[("mailer_http_request_duration_seconds_count", route)] == 2


async def test_route_templates_come_from_real_routing(settings: Settings) -> None:
    """observe_scope on the scopes FastAPI really routes (an ASGI wrapper of the test's own
    plays the middleware): labels are full templates, distinct for the two /metrics."""
    app = metrics_app(settings)
    async with LifespanManager(app) as manager:
        metrics = MetricsRegistry()  # its own: the app's may be fed by the real middleware
        inner = manager.app

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            status = 0

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await inner(scope, receive, send_status)
            metrics.observe_scope(scope, status, 2.0)

        transport = httpx.ASGITransport(app=observed)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            await http.get("/api/v1/health")
            await http.get("/api/v1/health")
            await http.get("/api/v1/templates/01HXXXXXXXXXXXXXXXXXXXXXXX")  # 401, no key
            await http.get("/no/such/path")
            await http.get("/api/v1/metrics")
            await http.get("/metrics")
    got = samples(_text(metrics))
    count = "mailer_http_request_duration_seconds_count"

    def seen(route: str, status: str) -> float | None:
        return got.get((count, (("method", "GET"), ("route", route), ("status", status))))

    assert seen("/api/v1/health", "200") == 2
    assert seen("/api/v1/templates/{template_id}", "401") == 1
    assert seen("unmatched", "404") == 1
    assert seen("/api/v1/metrics", "200") == 1
    assert seen("/metrics", "200") == 1
    routes = {dict(labels)["route"] for name, labels in got if name == count}
    assert routes == {
        "/api/v1/health",
        "/api/v1/templates/{template_id}",
        "unmatched",
        "/api/v1/metrics",
        "/metrics",
    }


@pytest.mark.skipif(not HTTP_HOOK_WIRED, reason="observe_scope not wired (app.py, middleware)")
async def test_http_requests_are_observed_by_route_template(settings: Settings) -> None:
    async with metrics_client(settings) as c:
        await c.http.get("/api/v1/health")
        await c.http.get("/api/v1/health")
        await c.http.get("/api/v1/templates/01HXXXXXXXXXXXXXXXXXXXXXXX")  # 401, no key
        await c.http.get("/no/such/path")
        got = samples((await c.http.get("/metrics")).text)
    count = "mailer_http_request_duration_seconds_count"
    assert got[(count, (("method", "GET"), ("route", "/api/v1/health"), ("status", "200")))] == 2
    template = (("method", "GET"), ("route", "/api/v1/templates/{template_id}"), ("status", "401"))
    assert got[(count, template)] == 1
    assert got[(count, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    routes = {dict(labels).get("route") for name, labels in got if name == count}
    assert not any(r and ("01HX" in r or "/no/such" in r) for r in routes)


@pytest.mark.skipif(not OUTCOMES_HOOK_WIRED, reason="outcome observer not wired in worker yet")
async def test_worker_sends_are_counted(settings: Settings) -> None:
    async with metrics_client(settings, embedded_worker=True) as c:
        key = await c.make_key("send")
        template_id = await create_template(c.http, key)
        response = await post_batch(c.http, key, template_id, make_recipients(3))
        assert response.status_code == 201, response.text
        body = await wait_batch(c.http, key, response.json()["id"])
        assert body["status"] == "COMPLETED"
        got = samples((await c.http.get("/metrics", headers=auth(key))).text)
        summary = (await c.http.get("/api/v1/metrics")).json()
    outbox = (("transport", "outbox"),)
    assert got[("mailer_messages_total", (("event", "sent"), *outbox))] == 3
    if LATENCY_HOOK_WIRED:
        assert got[("mailer_send_duration_seconds_count", outbox)] == 3
    assert summary["totals"]["sent"] == 3
    assert summary["workersAlive"] >= 1
