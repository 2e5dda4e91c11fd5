"""Outbound webhook endpoints: list, create (the secret shown once), enable and disable,
delete, rotate the secret, send the test event, and an endpoint's delivery log with replays.

Every change goes through `webhook_endpoints.service`, as the API's routes do; a refusal of
the service (a URL the SSRF guard refuses, an unknown event type) comes back as a form error.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from mailer.console.rendering import redirect_to, render_page
from mailer.console.site import Db, User, host_state
from mailer.errors import ValidationFailed
from mailer.models.base import utcnow
from mailer.models.webhook_endpoint import DeliveryState
from mailer.webhook_endpoints import catalog
from mailer.webhook_endpoints import service as webhooks
from mailer.webhook_endpoints.schemas import EndpointCreate

router = APIRouter()
ENDPOINTS = 500
PAGE = 50
NOTICES = {
    "deleted": "Endpoint deleted, with its delivery log.",
    "enabled": "Endpoint enabled: events are delivered to it again.",
    "disabled": "Endpoint disabled: no events are delivered to it until it is enabled.",
    "replayed": "Delivery queued again: it is sent with its first webhook-id and body.",
}
SINCE_FORMAT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends


def _field_errors(exc: ValidationFailed | ValidationError) -> dict[str, str]:
    """Field name ("url", "events", "description", "since") → what is wrong with it."""
    found: dict[str, str] = {}
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "form"
            found.setdefault(field, str(error["msg"]))
        return found
    for detail in exc.details:
        field = str(detail.get("field", "form")).split("[", 1)[0]
        message = str(detail.get("message", exc.message))
        found[field] = f"{found[field]}; {message}" if field in found else message
    return found or {"form": exc.message}


async def _list_page(
    request: Request,
    session: Db,
    *,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    rows, total = await webhooks.list_endpoints(session, limit=ENDPOINTS, offset=0)
    latest = await webhooks.latest_deliveries(session, [r.id for r in rows])
    return render_page(
        request,
        "webhooks.html",
        {
            "title": "Webhooks",
            "endpoints": rows,
            "total": total,
            "latest": latest,
            "event_types": catalog.EVENT_TYPES,
            "notice": NOTICES.get(notice or ""),
            "errors": errors or {},
            "values": values or {"url": "", "events": [], "description": "", "enabled": True},
        },
        status_code=status,
    )


@router.get("/webhooks")
async def endpoint_list(
    request: Request,
    session: Db,
    user: User,
    notice: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    return await _list_page(request, session, notice=notice)


@router.post("/webhooks")
async def create(
    request: Request,
    session: Db,
    user: User,
    url: Annotated[str, Form()] = "",
    events: Annotated[list[str] | None, Form()] = None,
    description: Annotated[str, Form()] = "",
    enabled: Annotated[str | None, Form()] = None,
) -> Response:
    values: dict[str, Any] = {
        "url": url,
        "events": events or [],
        "description": description,
        "enabled": enabled is not None,
    }
    try:
        body = EndpointCreate.model_validate(values)
        endpoint = await webhooks.create(
            session,
            host_state(request).settings,
            url=body.url,
            events=body.events,
            description=body.description,
            enabled=body.enabled,
        )
    except (ValidationError, ValidationFailed) as exc:
        errors = _field_errors(exc)
        return await _list_page(request, session, errors=errors, values=values, status=422)
    # The secret is in this response only: the page answers the POST, nothing is cached.
    return await _endpoint_page(request, session, endpoint.id, secret=endpoint.secret, status=201)


async def _endpoint_page(
    request: Request,
    session: Db,
    endpoint_id: str,
    *,
    before: str | None = None,
    secret: str | None = None,
    rotated: bool = False,
    tested: int | None = None,
    replayed: int | None = None,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    since: str | None = None,
    status: int = 200,
) -> Response:
    endpoint = await webhooks.get(session, endpoint_id)
    deliveries, next_cursor = await webhooks.list_deliveries(
        session, endpoint_id, cursor=before, limit=PAGE
    )
    test = await webhooks.get_delivery(session, endpoint_id, tested) if tested else None
    now = utcnow()
    return render_page(
        request,
        "webhook.html",
        {
            "title": f"Webhook endpoint {endpoint.id}",
            "endpoint": endpoint,
            "deliveries": deliveries,
            "next_before": next_cursor,
            "paged": before is not None,
            "secret": secret,
            "rotated": rotated,
            "test": test,
            "replayed": replayed,
            "notice": NOTICES.get(notice or ""),
            "errors": errors or {},
            "since": since or (now - timedelta(days=1)).strftime(SINCE_FORMAT),
            "pending": DeliveryState.PENDING,
            "overlap": endpoint.previous_secret_expires_at is not None
            and endpoint.previous_secret_expires_at > now,
        },
        status_code=status,
    )


@router.get("/webhooks/{endpoint_id}")
async def endpoint_page(
    request: Request,
    endpoint_id: str,
    session: Db,
    user: User,
    before: Annotated[str | None, Query(max_length=20)] = None,
    tested: Annotated[int | None, Query(ge=1)] = None,
    replayed: Annotated[int | None, Query(ge=0)] = None,
    notice: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    return await _endpoint_page(
        request,
        session,
        endpoint_id,
        before=before,
        tested=tested,
        replayed=replayed,
        notice=notice,
    )


async def _set_enabled(request: Request, session: Db, endpoint_id: str, enabled: bool) -> Response:
    settings = host_state(request).settings
    await webhooks.update(session, settings, endpoint_id, enabled=enabled)
    notice = "enabled" if enabled else "disabled"
    return redirect_to(request, f"/webhooks/{endpoint_id}?notice={notice}")


@router.post("/webhooks/{endpoint_id}/enable")
async def enable(request: Request, endpoint_id: str, session: Db, user: User) -> Response:
    return await _set_enabled(request, session, endpoint_id, True)


@router.post("/webhooks/{endpoint_id}/disable")
async def disable(request: Request, endpoint_id: str, session: Db, user: User) -> Response:
    return await _set_enabled(request, session, endpoint_id, False)


@router.get("/webhooks/{endpoint_id}/delete")
async def confirm_delete(request: Request, endpoint_id: str, session: Db, user: User) -> Response:
    endpoint = await webhooks.get(session, endpoint_id)
    return render_page(
        request,
        "webhook_delete.html",
        {"title": "Delete a webhook endpoint", "endpoint": endpoint},
    )


@router.post("/webhooks/{endpoint_id}/delete")
async def delete(request: Request, endpoint_id: str, session: Db, user: User) -> Response:
    await webhooks.delete(session, endpoint_id)
    return redirect_to(request, "/webhooks?notice=deleted")


@router.post("/webhooks/{endpoint_id}/rotate-secret")
async def rotate_secret(request: Request, endpoint_id: str, session: Db, user: User) -> Response:
    endpoint = await webhooks.rotate_secret(session, endpoint_id)
    return await _endpoint_page(request, session, endpoint_id, secret=endpoint.secret, rotated=True)


@router.post("/webhooks/{endpoint_id}/test")
async def send_test(request: Request, endpoint_id: str, session: Db, user: User) -> Response:
    # Waits for the receiver (up to WEBHOOK_TIMEOUT); the result is in the delivery log,
    # which the page shows (a reload does not send the test again).
    result = await webhooks.send_test(session, host_state(request).settings, endpoint_id)
    return redirect_to(request, f"/webhooks/{endpoint_id}?tested={result.delivery_id}")


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay")
async def replay(
    request: Request, endpoint_id: str, delivery_id: int, session: Db, user: User
) -> Response:
    await webhooks.replay(session, endpoint_id, delivery_id)
    return redirect_to(request, f"/webhooks/{endpoint_id}?notice=replayed")


def _since(value: str) -> datetime:
    """A datetime-local value (or ISO 8601), read as UTC when it names no zone."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationFailed(
            "since is not a date and time.",
            details=[{"field": "since", "message": "write it as YYYY-MM-DDTHH:MM (UTC)"}],
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.post("/webhooks/{endpoint_id}/replay-failed")
async def replay_failed(
    request: Request,
    endpoint_id: str,
    session: Db,
    user: User,
    since: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    try:
        count = await webhooks.replay_failed(session, endpoint_id, _since(since))
    except ValidationFailed as exc:
        return await _endpoint_page(
            request,
            session,
            endpoint_id,
            errors=_field_errors(exc),
            since=since,
            status=422,
        )
    return redirect_to(request, f"/webhooks/{endpoint_id}?replayed={count}")
