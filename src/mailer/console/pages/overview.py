"""Overview: traffic charts, reputation against the guard's thresholds, queue and workers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.config import TransportName
from mailer.console import repository
from mailer.console.charts import KINDS, line_chart
from mailer.console.rendering import redirect_to, render_page
from mailer.console.ses_quota import SesQuotaCache
from mailer.console.site import Db, User, host_state
from mailer.metrics import worker_window
from mailer.metrics.summary import metric_series, queue_depth
from mailer.models.base import utcnow
from mailer.reputation import service as reputation
from mailer.state import AppState
from mailer.worker.heartbeats import RATE_WINDOW_S, worker_rates, workers_alive

router = APIRouter()
ses_quota = SesQuotaCache()
Read = Callable[[AsyncSession], Awaitable[Any]]


async def _read_all(state: AppState, session: AsyncSession, reads: Sequence[Read]) -> list[Any]:
    """Run independent reads. On PostgreSQL each on a session of its own, at the same time
    (the page waits for the slowest, not for the sum); on SQLite one after another on the
    request's session (a second SQLite transaction would wait for the request's own)."""
    if session.get_bind().dialect.name != "postgresql":
        return [await read(session) for read in reads]

    async def one(read: Read) -> Any:
        async with state.read_sessionmaker() as own:
            return await read(own)

    return list(await asyncio.gather(*(one(read) for read in reads)))


@router.get("/")
async def overview(request: Request, session: Db, user: User) -> Response:
    state = host_state(request)
    settings = state.settings
    now = utcnow()
    depth_task = asyncio.create_task(queue_depth(state.queue))
    window = worker_window(settings)
    minutes, hours, rates, pause, alive, workers, in_flight = await _read_all(
        state,
        session,
        [
            lambda s: metric_series(s, 1, now=now),
            lambda s: metric_series(s, 24, now=now),
            lambda s: reputation.window_rates(s, now - reputation.WINDOW),
            reputation.current,
            lambda s: workers_alive(s, window),
            lambda s: worker_rates(s, window),
            repository.messages_in_flight,
        ],
    )
    depth = await depth_task
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
            "worker_rates": workers,
            "rate_window_s": int(RATE_WINDOW_S),
            "queue_depth": depth,
            "in_flight": in_flight,
            "sent_last_minute": last_minute,
            "transport": settings.mail_transport.value,
            "ses_quota": quota,
            "window_hours": int(reputation.WINDOW / timedelta(hours=1)),
        },
    )


@router.post("/sending/pause")
async def pause(request: Request, session: Db, user: User) -> Response:
    await reputation.pause(session, "paused from the console", by=f"api-key:{user.key_id}")
    return redirect_to(request, "/")


@router.post("/sending/resume")
async def resume(request: Request, session: Db, user: User) -> Response:
    await reputation.resume(session, by=f"api-key:{user.key_id}")
    return redirect_to(request, "/")
