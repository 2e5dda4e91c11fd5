"""Outbound webhook endpoints: create, change, rotate the secret, test, the delivery log,
replays. Functions only flush; the caller commits (`send_test` also commits before its
HTTP request, see there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.config import AppEnv, Settings
from mailer.db.after_commit import after_commit
from mailer.errors import NotFound, ValidationFailed
from mailer.models import WebhookDelivery, WebhookEndpoint
from mailer.models.base import utcnow
from mailer.models.webhook_endpoint import DeliveryState
from mailer.webhook_endpoints import catalog, outbox, repository, signing, ssrf
from mailer.webhook_endpoints.dispatcher import secrets_in_force
from mailer.webhook_endpoints.sender import Sender

ROTATION_OVERLAP = timedelta(hours=24)
_UNSET: Any = object()


def require_https(settings: Settings) -> bool:
    return settings.app_env is AppEnv.PRODUCTION and not settings.webhook_allow_http


async def check_url(settings: Settings, url: str) -> None:
    try:
        await ssrf.check_url(
            url,
            allow_private=settings.webhook_allow_private,
            require_https=require_https(settings),
        )
    except ssrf.UrlRefused as exc:
        raise ValidationFailed(
            f"url {exc}.", details=[{"field": "url", "message": str(exc)}]
        ) from None


def check_events(events: Sequence[str]) -> list[str]:
    problems = [
        {"field": f"events[{i}]", "message": f"unknown event type {name!r}"}
        for i, name in enumerate(events)
        if name not in catalog.EVENT_TYPES
    ]
    if problems:
        raise ValidationFailed(
            f"Unknown event type(s); known: {', '.join(catalog.EVENT_TYPES)}.", details=problems
        )
    return list(dict.fromkeys(events))


def _changed(session: AsyncSession) -> None:
    """Writers of this process see the change at once (and again after the commit)."""
    outbox.invalidate()

    async def forget() -> None:
        outbox.invalidate()

    after_commit(session, forget)


async def create(
    session: AsyncSession,
    settings: Settings,
    *,
    url: str,
    events: Sequence[str] = (),
    description: str = "",
    enabled: bool = True,
) -> WebhookEndpoint:
    """A new endpoint; its `secret` is shown to the caller this once."""
    types = check_events(events)
    await check_url(settings, url)
    now = utcnow()
    endpoint = WebhookEndpoint(
        url=url,
        events=types,
        description=description,
        enabled=enabled,
        secret=signing.new_secret(),
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    await session.flush()
    _changed(session)
    return endpoint


async def get(
    session: AsyncSession, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpoint:
    endpoint = await repository.get_endpoint(session, endpoint_id, for_update=for_update)
    if endpoint is None:
        raise NotFound(f"Webhook endpoint {endpoint_id!r} does not exist.")
    return endpoint


async def list_endpoints(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[WebhookEndpoint], int]:
    return await repository.list_endpoints(session, limit, offset)


async def update(
    session: AsyncSession,
    settings: Settings,
    endpoint_id: str,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    types = check_events(events) if events is not None else None
    if url is not None:
        await check_url(settings, url)
    endpoint = await get(session, endpoint_id, for_update=True)
    if url is not None:
        endpoint.url = url
    if types is not None:
        endpoint.events = types
    if description is not None:
        endpoint.description = description
    if enabled is not None:
        if enabled and not endpoint.enabled:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        elif not enabled and endpoint.enabled:
            endpoint.disabled_reason = "disabled by an admin"
        endpoint.enabled = enabled
    endpoint.updated_at = utcnow()
    await session.flush()
    _changed(session)
    return endpoint


async def delete(session: AsyncSession, endpoint_id: str) -> None:
    """The endpoint and its delivery log."""
    if not await repository.delete_endpoint(session, endpoint_id):
        raise NotFound(f"Webhook endpoint {endpoint_id!r} does not exist.")
    _changed(session)


async def rotate_secret(session: AsyncSession, endpoint_id: str) -> WebhookEndpoint:
    """A new secret; the old one keeps signing (beside it) for ROTATION_OVERLAP."""
    endpoint = await get(session, endpoint_id, for_update=True)
    now = utcnow()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
    endpoint.secret = signing.new_secret()
    endpoint.updated_at = now
    await session.flush()
    return endpoint


@dataclass(frozen=True, slots=True)
class TestResult:
    delivery_id: int
    event_id: str
    success: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    response: str | None


async def send_test(session: AsyncSession, settings: Settings, endpoint_id: str) -> TestResult:
    """Send a webhook.test event to the endpoint now (enabled or not) and log it.

    The one service that ends its caller's transaction: what it read is committed before
    the HTTP request, so no transaction (on SQLite: the write lock) is held for the up to
    WEBHOOK_TIMEOUT the receiver may take. The log row is written in a new one."""
    now = utcnow()
    event_id = outbox.new_event_id()
    endpoint = await get(session, endpoint_id)
    url, secrets = endpoint.url, secrets_in_force(endpoint, now)
    await session.commit()
    data = {"endpointId": endpoint_id, "message": "A test event sent by mailer."}
    body = catalog.body(catalog.WEBHOOK_TEST, now, data)
    sender = Sender(
        timeout=settings.webhook_timeout, allow_private=settings.webhook_allow_private, limit=1
    )
    try:
        attempt = await sender.send(url, secrets, event_id, body)
    finally:
        await sender.close()
    delivery = await repository.add_delivery(
        session,
        event_id=event_id,
        endpoint_id=endpoint_id,
        type=catalog.WEBHOOK_TEST,
        data=data,
        payload=body,
        created_at=now,
        state=DeliveryState.DELIVERED if attempt.ok else DeliveryState.FAILED,
        attempts=1,
        last_attempt_at=utcnow(),
        status_code=attempt.status_code,
        error=attempt.error,
        latency_ms=attempt.latency_ms,
        response=attempt.response,
    )
    return TestResult(
        delivery_id=delivery.id,
        event_id=event_id,
        success=attempt.ok,
        status_code=attempt.status_code,
        latency_ms=attempt.latency_ms,
        error=attempt.error,
        response=attempt.response,
    )


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise ValidationFailed(
            "cursor is not valid.", details=[{"field": "cursor", "message": "not a cursor"}]
        )
    return int(value)


async def list_deliveries(
    session: AsyncSession, endpoint_id: str, *, cursor: str | None, limit: int
) -> tuple[list[WebhookDelivery], str | None]:
    """Newest first; the cursor of the next page (None on the last)."""
    before = _cursor(cursor)
    await get(session, endpoint_id)
    rows = await repository.list_deliveries(session, endpoint_id, before, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (str(rows[-1].id) if more and rows else None)


async def latest_deliveries(
    session: AsyncSession, endpoint_ids: Sequence[str]
) -> dict[str, WebhookDelivery]:
    """Each endpoint's newest delivery (endpoints without one are left out)."""
    return await repository.latest_deliveries(session, endpoint_ids)


async def get_delivery(
    session: AsyncSession, endpoint_id: str, delivery_id: int
) -> WebhookDelivery:
    await get(session, endpoint_id)
    delivery = await repository.get_delivery(session, endpoint_id, delivery_id)
    if delivery is None:
        raise NotFound(f"Delivery {delivery_id} of endpoint {endpoint_id!r} does not exist.")
    return delivery


async def replay(session: AsyncSession, endpoint_id: str, delivery_id: int) -> WebhookDelivery:
    """Deliver this event again (same webhook-id and body), due now, retries afresh."""
    delivery = await get_delivery(session, endpoint_id, delivery_id)
    delivery.state = DeliveryState.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    delivery.leased_until = None
    await session.flush()
    return delivery


async def replay_failed(session: AsyncSession, endpoint_id: str, since: datetime) -> int:
    """Every FAILED delivery of the endpoint last attempted at or after `since`, again."""
    await get(session, endpoint_id)
    return await repository.replay_failed_since(session, endpoint_id, since, utcnow())
