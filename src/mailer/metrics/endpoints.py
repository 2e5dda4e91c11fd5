"""GET /api/v1/metrics (public JSON summary), GET /api/v1/admin/metrics?hours=N (time
series) and GET /metrics at the root (Prometheus text format).

`router` goes under the API prefix, `prometheus_router` at the root. With
METRICS_REQUIRE_KEY both public endpoints need a key with the send scope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from mailer.auth.dependencies import AdminKey, authenticate_request
from mailer.deps import ApiRoute, Session, State
from mailer.errors import Forbidden
from mailer.metrics.prometheus import get_metrics
from mailer.metrics.schemas import (
    AdminMetricsOut,
    BucketOut,
    KindCounts,
    MetricsSummaryOut,
)
from mailer.metrics.summary import metric_series
from mailer.models.enums import MetricKind, Scope
from mailer.reputation.schemas import SendingState
from mailer.reputation.service import current as current_pause

MAX_HOURS = 720


async def metrics_access(request: Request, state: State) -> None:
    """Open by default; a send key when METRICS_REQUIRE_KEY is set."""
    if not state.settings.metrics_require_key:
        return
    principal = await authenticate_request(request, state)
    if not principal.has(Scope.SEND):
        raise Forbidden("This API key lacks the 'send' scope.", code="insufficient_scope")


MetricsAccess = Depends(metrics_access)
router = APIRouter(tags=["metrics"], route_class=ApiRoute)
prometheus_router = APIRouter(tags=["metrics"], route_class=ApiRoute)


@router.get(
    "/metrics",
    response_model=MetricsSummaryOut,
    dependencies=[MetricsAccess],
    responses={401: {"description": "METRICS_REQUIRE_KEY is set and no valid key was sent"}},
)
async def metrics_summary(state: State, session: Session) -> MetricsSummaryOut:
    """Counters and state at a glance: totals and last hour, queue depth, workers alive,
    batches by status, dead letters. Cached for a few seconds."""
    metrics = get_metrics(state)
    snap = await metrics.snapshot(state, session)
    return MetricsSummaryOut(
        totals=KindCounts(**snap.totals),
        last_hour=KindCounts(**snap.last_hour),
        queue_depth=snap.queue_depth,
        workers_alive=snap.workers_alive,
        batches=snap.batches,
        dead_letters=snap.dead_letters,
        sending_paused=snap.pause.paused,
        uptime_seconds=round(metrics.uptime_seconds(), 3),
        generated_at=snap.taken_at,
    )


@router.get("/admin/metrics", response_model=AdminMetricsOut, tags=["admin"])
async def admin_metrics(
    session: Session,
    _: AdminKey,
    hours: Annotated[
        int,
        Query(ge=1, le=MAX_HOURS, description="window; minute buckets up to 6, hours beyond"),
    ] = 24,
) -> AdminMetricsOut:
    """Counts per time bucket over the last `hours` hours (every bucket, zeros included),
    totals, bounce and complaint rates, and whether sending is paused."""
    series = await metric_series(session, hours)
    pause = await current_pause(session)
    return AdminMetricsOut(
        hours=hours,
        granularity=series.granularity,
        start=series.start,
        end=series.end,
        buckets=[BucketOut(start=b.start, **b.counts) for b in series.buckets],
        totals=KindCounts(**series.totals),
        bounce_rate=series.rate(MetricKind.BOUNCED),
        complaint_rate=series.rate(MetricKind.COMPLAINED),
        reputation=SendingState(
            paused=pause.paused,
            reason=pause.reason,
            since=pause.since,
            resumed_at=pause.resumed_at,
        ),
    )


@prometheus_router.get(
    "/metrics",
    dependencies=[MetricsAccess],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def prometheus_metrics(state: State, session: Session) -> Response:
    """Prometheus exposition (multiprocess-aware, see mailer.metrics.prometheus)."""
    metrics = get_metrics(state)
    return Response(await metrics.exposition(state, session), media_type=metrics.content_type)
