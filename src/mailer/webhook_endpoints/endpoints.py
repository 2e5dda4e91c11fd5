"""/webhook-endpoints: the customer's receivers of outbound webhooks (admin scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Response

from mailer.auth.dependencies import AdminKey
from mailer.deps import ApiRoute, Paging, Session, State
from mailer.jsonbody import json_body, request_body_doc
from mailer.webhook_endpoints import service
from mailer.webhook_endpoints.schemas import (
    EVENT_MODELS,
    DeliveryOut,
    DeliveryPage,
    EndpointCreate,
    EndpointOut,
    EndpointPage,
    EndpointUpdate,
    EndpointWithSecret,
    ReplayedOut,
    ReplayFailed,
    SecretOut,
    TestOut,
)

router = APIRouter(prefix="/webhook-endpoints", tags=["webhook-endpoints"], route_class=ApiRoute)

CreateBody = Annotated[EndpointCreate, json_body(EndpointCreate)]
UpdateBody = Annotated[EndpointUpdate, json_body(EndpointUpdate)]
ReplayBody = Annotated[ReplayFailed, json_body(ReplayFailed)]


@router.post(
    "",
    status_code=201,
    response_model=EndpointWithSecret,
    openapi_extra=request_body_doc(EndpointCreate),
)
async def create_endpoint(
    _: AdminKey, body: CreateBody, session: Session, state: State
) -> EndpointWithSecret:
    """A new endpoint. The answer carries its signing secret, shown only this once."""
    endpoint = await service.create(
        session,
        state.settings,
        url=body.url,
        events=body.events,
        description=body.description,
        enabled=body.enabled,
    )
    return EndpointWithSecret.model_validate(endpoint)


@router.get("", response_model=EndpointPage)
async def list_endpoints(session: Session, page: Paging, _: AdminKey) -> EndpointPage:
    rows, total = await service.list_endpoints(session, limit=page.limit, offset=page.offset)
    return EndpointPage(
        data=[EndpointOut.model_validate(r) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{endpoint_id}", response_model=EndpointOut)
async def get_endpoint(endpoint_id: str, session: Session, _: AdminKey) -> EndpointOut:
    return EndpointOut.model_validate(await service.get(session, endpoint_id))


@router.patch(
    "/{endpoint_id}", response_model=EndpointOut, openapi_extra=request_body_doc(EndpointUpdate)
)
async def update_endpoint(
    endpoint_id: str, _: AdminKey, body: UpdateBody, session: Session, state: State
) -> EndpointOut:
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    endpoint = await service.update(session, state.settings, endpoint_id, **changes)
    return EndpointOut.model_validate(endpoint)


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: str, session: Session, _: AdminKey) -> Response:
    await service.delete(session, endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=SecretOut)
async def rotate_secret(endpoint_id: str, session: Session, _: AdminKey) -> SecretOut:
    """A new secret. For 24 h messages are signed with the old and the new one."""
    return SecretOut.model_validate(await service.rotate_secret(session, endpoint_id))


@router.post("/{endpoint_id}/test", response_model=TestOut)
async def send_test_event(endpoint_id: str, _: AdminKey, session: Session, state: State) -> TestOut:
    """Send a webhook.test event now; the receiver's status code and the latency."""
    result = await service.send_test(session, state.settings, endpoint_id)
    return TestOut.model_validate(result)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    endpoint_id: str,
    session: Session,
    _: AdminKey,
    cursor: Annotated[str | None, Query(max_length=20, description="from nextCursor")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryPage:
    """Newest first."""
    rows, next_cursor = await service.list_deliveries(
        session, endpoint_id, cursor=cursor, limit=limit
    )
    return DeliveryPage(data=[DeliveryOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("/{endpoint_id}/deliveries/{delivery_id}/replay", response_model=DeliveryOut)
async def replay_delivery(
    endpoint_id: str, delivery_id: int, session: Session, _: AdminKey
) -> DeliveryOut:
    """Deliver the event again, with the same webhook-id."""
    return DeliveryOut.model_validate(await service.replay(session, endpoint_id, delivery_id))


@router.post(
    "/{endpoint_id}/deliveries/replay-failed",
    response_model=ReplayedOut,
    openapi_extra=request_body_doc(ReplayFailed),
)
async def replay_failed(
    endpoint_id: str, _: AdminKey, body: ReplayBody, session: Session
) -> ReplayedOut:
    """Deliver again every event that failed at or after `since`."""
    return ReplayedOut(replayed=await service.replay_failed(session, endpoint_id, body.since))


def document_events(app: FastAPI) -> None:
    """Each event type's body in the OpenAPI document's `webhooks` section."""
    for name, model in EVENT_MODELS.items():

        async def event(body: Any) -> None:
            """Sent to every endpoint subscribed to this type, signed (Standard Webhooks)."""

        event.__annotations__["body"] = model

        app.webhooks.add_api_route(
            name,
            event,
            methods=["POST"],
            summary=name,
            name=name,
            operation_id=f"webhook_{name}",
            response_description=(
                "Any 2xx acknowledges the event; 410 disables the endpoint; anything else "
                "(and no answer within 10 s) is retried."
            ),
        )
