"""Prometheus instruments, the hooks that feed them, and the exposition.

One MetricsRegistry per process: the API creates it in its lifespan (`get_metrics(state)`),
a separate worker process creates its own. Two modes:

- single process (default): the instruments live in the registry's own CollectorRegistry,
  so every MetricsRegistry (e.g. every test's app) starts from zero.
- multiprocess: when PROMETHEUS_MULTIPROC_DIR is set in the environment *before the process
  starts* (required with `uvicorn --workers N` / `mailer api --workers N`, and for worker
  processes on the same host or a shared volume), prometheus_client writes every process's
  values to files in that directory and `/metrics` sums them with MultiProcessCollector.
  Empty the directory before the processes start (stale files count otherwise).

Gauges backed by the database and the queue (queue depth, dead letters, batches by status,
sending paused, workers alive) are read at scrape time through the snapshot cache, never by
background loops.
"""

from __future__ import annotations

import os
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from mailer.metrics.summary import Snapshot, SnapshotCache
from mailer.models.enums import RecipientStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from mailer.config import Settings
    from mailer.delivery.recorder import Outcome
    from mailer.state import AppState

log = structlog.get_logger("mailer.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Anything else (a client can send any token as a method) is one label value, so a client
# cannot grow the series count.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of requests no route matched (404s)
_OUTCOME_EVENT = {
    RecipientStatus.SENT: "sent",
    RecipientStatus.FAILED: "failed",
    RecipientStatus.RETRYING: "retried",
    RecipientStatus.SUPPRESSED: "suppressed",
}


class _Instruments:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.messages = Counter(
            "mailer_messages",
            "Messages by outcome (sent, failed, retried, suppressed from the worker; "
            "bounced, complained, delivered, unsubscribed from notifications).",
            ["event", "transport"],
            registry=registry,
        )
        self.send_duration = Histogram(
            "mailer_send_duration_seconds",
            "Time one provider send call took.",
            ["transport"],
            buckets=SEND_BUCKETS,
            registry=registry,
        )
        self.http_duration = Histogram(
            "mailer_http_request_duration_seconds",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.ses_events = Counter(
            "mailer_ses_events",
            "SES notifications processed, by whether they were about a message mailer sent "
            "(ours) or not (not_ours: another sender on the account, or no messageId); the "
            "latter suppress the addresses they name without any check against our sends.",
            ["message"],
            registry=registry,
        )
        self.ses_ignored = Counter(
            "mailer_ses_addresses_ignored",
            "Addresses named by an SES notification about one of our messages that the "
            "message was not sent to: ignored (a forged or mistaken event).",
            registry=registry,
        )
        self.rate_wait = Counter(
            "mailer_rate_limiter_wait_seconds",
            "Time sends spent waiting for the global send-rate limiter.",
            registry=registry,
        )
        self.rate_waits = Counter(
            "mailer_rate_limiter_waits",
            "Sends that had to wait for the global send-rate limiter.",
            registry=registry,
        )


# Multiprocess mode: values are stored per process in files keyed by metric and labels; two
# instrument sets in one process would overwrite each other's values, so there is one.
_shared: dict[int, _Instruments] = {}


def _process_instruments() -> _Instruments:
    pid = os.getpid()  # a forked child gets its own
    if pid not in _shared:
        _shared[pid] = _Instruments(registry=None)
    return _shared[pid]


def multiprocess_dir() -> str | None:
    """The multiprocess directory when multiprocess mode is really on in this process."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    if values.ValueClass is values.MutexValue:
        log.warning(
            "prometheus_multiproc_ignored",
            hint=f"{MULTIPROC_ENV} was set after prometheus_client was imported; "
            "set it in the environment before the process starts",
        )
        return None
    return path


class _StateCollector(Collector):
    """Database/queue gauges from the latest snapshot (refreshed by the scrape endpoint)."""

    def __init__(self, cache: SnapshotCache) -> None:
        self._cache = cache

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration; collect() needs a snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._cache.latest
        if snap is None:
            return
        yield from state_families(snap)


def state_families(snap: Snapshot) -> Iterator[Metric]:
    if snap.queue_depth is not None:  # absent while the queue backend is unreachable
        yield GaugeMetricFamily(
            "mailer_queue_depth", "Jobs waiting, delayed or active.", value=snap.queue_depth
        )
    yield GaugeMetricFamily("mailer_dead_letters", "Dead letters stored.", value=snap.dead_letters)
    batches = GaugeMetricFamily("mailer_batches", "Batches by status.", labels=["status"])
    for status, count in sorted(snap.batches.items()):
        batches.add_metric([status], count)
    yield batches
    yield GaugeMetricFamily(
        "mailer_sending_paused",
        "1 while sending is paused by the reputation guard.",
        value=1 if snap.pause.paused else 0,
    )
    yield GaugeMetricFamily(
        "mailer_workers_alive", "Workers with a recent heartbeat.", value=snap.workers_alive
    )


def _route_templates(app: object) -> dict[int, str]:
    """id(route) → full path template (prefixes included) for every route of `app`.

    Recent FastAPI includes routers lazily: the route a request matched (scope["route"])
    has the path relative to its router ("/templates/{template_id}"); the full template is
    in the route contexts. Older FastAPI copied routes with their prefixes, so there
    route.path already is the full template.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI
        return {}
    routes = getattr(app, "routes", None) or []
    return {id(c.original_route): c.path for c in iter_route_contexts(routes) if c.path}


class MetricsRegistry:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, cache_ttl: float = 5.0) -> None:
        self.started_at = time.time()
        self.snapshots = SnapshotCache(ttl=cache_ttl)
        self.multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry()
        if self.multiprocess_dir is not None:
            self._m = _process_instruments()
            MultiProcessCollector(self.registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            self._m = _Instruments(self.registry)
            ProcessCollector(registry=self.registry)
        self.registry.register(_StateCollector(self.snapshots))
        self._templates: dict[int, str] = {}
        # Bounded: methods are few, routes are templates, statuses are codes.
        self._http_children: dict[tuple[str, str, int], Any] = {}

    # -- hooks --------------------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, duration_ms: float) -> None:
        """One HTTP request; `route` is the route template (e.g. /api/v1/batches/{id})."""
        # Keyed by the label, not the raw method: a client may send any method token, and
        # the cache must stay as small as the label set.
        if method not in HTTP_METHODS:
            method = method.upper() if method.upper() in HTTP_METHODS else "OTHER"
        key = (method, route, status)
        histogram = self._http_children.get(key)
        if histogram is None:  # labels() validates and locks on every call: once per key
            histogram = self._m.http_duration.labels(method, route, str(status))
            self._http_children[key] = histogram
        histogram.observe(duration_ms / 1000)

    def observe_scope(self, scope: Mapping[str, Any], status: int, duration_ms: float) -> None:
        """One HTTP request, from its ASGI scope after routing (the middleware's hook)."""
        self.observe_request(
            str(scope.get("method", "OTHER")), self.route_template(scope), status, duration_ms
        )

    def route_template(self, scope: Mapping[str, Any]) -> str:
        """The matched route's full path template, never the raw path (bounded labels)."""
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        template = self._templates.get(id(route))
        if template is None:  # first request on this route: map the app's routes once more
            self._templates.update(_route_templates(scope.get("app")))
            template = self._templates.setdefault(id(route), getattr(route, "path", UNMATCHED))
        return template

    def observe_outcomes(self, outcomes: Iterable[Outcome], transport: str) -> None:
        """Durably recorded send outcomes (the delivery Recorder's observer)."""
        tally = Tally(_OUTCOME_EVENT.get(o.status, str(o.status).lower()) for o in outcomes)
        self.observe_counts(tally, transport)

    def outcome_observer(self, transport: str) -> Callable[[Sequence[Outcome]], None]:
        """A callable for `Recorder.observers`."""

        def observe(outcomes: Sequence[Outcome]) -> None:
            self.observe_outcomes(outcomes, transport)

        return observe

    def observe_counts(self, counts: Mapping[str, int], transport: str) -> None:
        """Counts by event name (MetricKind values), e.g. messages dead-lettered as failed."""
        for event, count in counts.items():
            if count:
                self._m.messages.labels(str(event), transport).inc(count)

    def observe_webhook_counts(self, counts: Mapping[str, int], transport: str = "ses") -> None:
        """What one provider notification changed (bounced, complained, delivered, ...)."""
        self.observe_counts(counts, transport)

    def observe_ses_event(self, ours: bool, ignored: int) -> None:
        self._m.ses_events.labels("ours" if ours else "not_ours").inc()
        if ignored:
            self._m.ses_ignored.inc(ignored)

    def observe_send_latency(self, transport: str, seconds: float) -> None:
        self._m.send_duration.labels(transport).observe(seconds)

    def observe_rate_wait(self, seconds: float) -> None:
        """One rate-limiter acquire; only the ones that waited count as waits."""
        if seconds > 0:
            self._m.rate_wait.inc(seconds)
            self._m.rate_waits.inc()

    # -- exposition ---------------------------------------------------------------------

    async def snapshot(self, state: AppState, session: AsyncSession) -> Snapshot:
        """The database/queue numbers, at most `cache_ttl` seconds old."""
        return await self.snapshots.get(
            session, state.queue, worker_window_s=worker_window(state.settings)
        )

    async def exposition(self, state: AppState, session: AsyncSession) -> bytes:
        """The Prometheus text format. The database gauges are refreshed first; if the
        database is down the process metrics are still served (the gauges stale or absent)."""
        try:
            await self.snapshot(state, session)
        except Exception as exc:
            log.warning("metrics_snapshot_failed", error=type(exc).__name__)
        return generate_latest(self.registry)

    def uptime_seconds(self) -> float:
        return max(0.0, time.time() - self.started_at)


def worker_window(settings: Settings) -> float:
    """A worker is alive while its heartbeat (every WORKER_DEAD_AFTER / 6 s) is younger than
    WORKER_DEAD_AFTER: the rule its claims are judged by (`delivery/liveness.py`)."""
    return settings.worker_dead_after


def get_metrics(state: AppState) -> MetricsRegistry:
    """The process's MetricsRegistry, kept in the app state (created on first use)."""
    metrics = state.extras.get("metrics")
    if not isinstance(metrics, MetricsRegistry):
        metrics = MetricsRegistry()
        state.extras["metrics"] = metrics
    return metrics
