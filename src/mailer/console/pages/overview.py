"""Overview: traffic charts, reputation against the guard's thresholds, queue and workers."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from mailer.config import TransportName
from mailer.console.charts import KINDS, line_chart
from mailer.console.rendering import render_page
from mailer.console.ses_quota import SesQuotaCache
from mailer.console.site import Db, User, host_state
from mailer.metrics import worker_window
from mailer.metrics.summary import metric_series, queue_depth, workers_alive
from mailer.models.base import utcnow
from mailer.reputation import service as reputation

router = APIRouter()
ses_quota = SesQuotaCache()


@router.get("/")
async def overview(request: Request, session: Db, user: User) -> Response:
    state = host_state(request)
    settings = state.settings
    now = utcnow()
    minutes = await metric_series(session, 1, now=now)
    hours = await metric_series(session, 24, now=now)
    rates = await reputation.window_rates(session, now - reputation.WINDOW)
    pause = await reputation.current(session)
    alive = await workers_alive(session, worker_window(settings))
    depth = await queue_depth(state.queue)
    quota = await ses_quota.get(settings) if settings.mail_transport is TransportName.SES else None
    last_minute = minutes.buckets[-2].counts["sent"] if len(minutes.buckets) > 1 else 0
    return render_page(
        request,
        "overview.html",
        {
            "title": "Overview",
            "kinds": KINDS,
            "charts": [
                line_chart(minutes, "Per minute, last hour", "%H:%M"),
                line_chart(hours, "Per hour, last 24 hours", "%d %H:00"),
            ],
            "rates": rates,
            "bounce_threshold": settings.bounce_rate_threshold,
            "complaint_threshold": settings.complaint_rate_threshold,
            "min_sends": settings.reputation_min_sends,
            "pause": pause,
            "workers": alive,
            "queue_depth": depth,
            "sent_last_minute": last_minute,
            "transport": settings.mail_transport.value,
            "ses_quota": quota,
            "window_hours": int(reputation.WINDOW / timedelta(hours=1)),
        },
    )


@router.post("/sending/pause")
async def pause(request: Request, session: Db, user: User) -> Response:
    await reputation.pause(session, "paused from the console", by=f"api-key:{user.key_id}")
    return RedirectResponse(request.scope.get("root_path", "") + "/", status_code=303)


@router.post("/sending/resume")
async def resume(request: Request, session: Db, user: User) -> Response:
    await reputation.resume(session, by=f"api-key:{user.key_id}")
    return RedirectResponse(request.scope.get("root_path", "") + "/", status_code=303)
