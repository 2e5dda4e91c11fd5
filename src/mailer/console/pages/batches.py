"""Batches: the list (filters, keyset pages) and one batch's page with live counts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.batches import service as batches
from mailer.console import repository
from mailer.console.rendering import redirect_to, render_page
from mailer.console.site import Db, User
from mailer.models import Batch
from mailer.models.base import iso_utc
from mailer.models.enums import BatchStatus, EventType

router = APIRouter()
PAGE = 50


def _tag(raw: str | None) -> tuple[str, str] | None:
    if not raw or "=" not in raw:
        return None
    name, _, value = raw.partition("=")
    return (name.strip(), value.strip()) if name.strip() else None


# What the API's `result` says, in words beside COMPLETED (which says only that every
# recipient reached a final state).
RESULT_TEXT = {
    "all_sent": "every message was sent",
    "partial": "some messages failed",
    "all_failed": "every message failed: nothing was sent",
    "none_sent": "nothing was sent: every recipient was suppressed or cancelled",
}


@router.get("/batches")
async def batch_list(
    request: Request,
    session: Db,
    user: User,
    status: Annotated[str | None, Query(max_length=16)] = None,
    tag: Annotated[str | None, Query(max_length=300)] = None,
    before: Annotated[str | None, Query(max_length=26)] = None,
) -> Response:
    status = status if status in {s.value for s in BatchStatus} else None
    tag_filter = _tag(tag)
    rows = await repository.batches_page(
        session, limit=PAGE, before=before, status=status, tag=tag_filter
    )
    return render_page(
        request,
        "batches.html",
        {
            "title": "Batches",
            "batches": rows[:PAGE],
            "next_before": rows[PAGE - 1].id if len(rows) > PAGE else None,
            "statuses": [s.value for s in BatchStatus],
            "status": status or "",
            "tag": tag or "",
            "tag_invalid": bool(tag) and tag_filter is None,
            "paged": before is not None,
        },
    )


async def live_counts(session: AsyncSession, batch: Batch) -> dict[str, Any]:
    """What the batch page shows and polls: recipients per status (from the batch's
    counters, as the API reports them), the total and how many are finished."""
    by_status = (await batches.status_counts(session, [batch]))[batch.id]
    counts = {str(status).lower(): int(n) for status, n in by_status.items()}
    result = batches.batch_result(batch.status, by_status)
    unfinished = counts["pending"] + counts["sending"] + counts["retrying"]
    return {
        "id": batch.id,
        "status": batch.status,
        "final": batch.status in batches.FINAL_BATCH_STATUSES,
        "counts": {
            "total": batch.total_recipients,
            "finished": batch.total_recipients - unfinished,
            **counts,
            "duplicates": batch.duplicate_count,
        },
        "completedAt": iso_utc(batch.completed_at) if batch.completed_at else None,
        "result": result,
        "resultText": RESULT_TEXT[result] if result else None,
    }


@router.get("/batches/{batch_id}")
async def batch_page(
    request: Request,
    batch_id: str,
    session: Db,
    user: User,
    event_type: Annotated[str | None, Query(max_length=32)] = None,
    events_after: Annotated[int | None, Query(ge=0)] = None,
    failures_after: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    batch = await batches.get_batch(session, batch_id)
    event_type = event_type if event_type in {t.value for t in EventType} else None
    events = await repository.batch_events(
        session, batch_id, limit=PAGE, after=events_after, type_=event_type
    )
    failures = await repository.batch_failures(session, batch_id, limit=PAGE, after=failures_after)
    return render_page(
        request,
        "batch.html",
        {
            "title": f"Batch {batch.id}",
            "batch": batch,
            "live": await live_counts(session, batch),
            "events": events[:PAGE],
            "events_next": events[PAGE - 1].id if len(events) > PAGE else None,
            "event_types": [t.value for t in EventType],
            "event_type": event_type or "",
            "failures": failures[:PAGE],
            "failures_next": failures[PAGE - 1].seq if len(failures) > PAGE else None,
        },
    )


@router.get("/batches/{batch_id}/live.json")
async def batch_live(batch_id: str, session: Db, user: User) -> JSONResponse:
    return JSONResponse(await live_counts(session, await batches.get_batch(session, batch_id)))


@router.post("/batches/{batch_id}/cancel")
async def cancel(request: Request, batch_id: str, session: Db, user: User) -> Response:
    await batches.cancel_batch(session, batch_id)
    return redirect_to(request, f"/batches/{batch_id}")
