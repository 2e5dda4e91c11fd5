"""/batches: thin routes over batches.service. POST reads the raw body (see ingest.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Request
from pydantic import BaseModel

from mailer.auth.dependencies import SendKey, require
from mailer.batches import service
from mailer.batches.ingest import parse_request
from mailer.batches.repository import BatchView
from mailer.batches.schemas import (
    EVENT_TYPE_FILTERS,
    BatchCreate,
    BatchCreated,
    BatchOut,
    BatchSummary,
    EventOut,
    event_type_filter,
)
from mailer.deps import (
    IDEMPOTENCY_KEY_DOC,
    ApiRoute,
    Limit,
    Offset,
    Paging,
    Session,
    State,
    idempotency_key,
    request_session,
    state_of,
)
from mailer.errors import ValidationFailed
from mailer.models import Batch
from mailer.models.enums import BatchStatus, Scope
from mailer.responses import JsonResponse, ModelResponse
from mailer.schemas import PageOut

router = APIRouter(prefix="/batches", tags=["batches"], route_class=ApiRoute)

_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchCreate"}}},
    }
}
OPENAPI_MODELS: list[type[BaseModel]] = [BatchCreate]


def batch_out(batch: BatchView, counts: dict[str, int]) -> BatchOut:
    return BatchOut(
        id=batch.id,
        status=batch.status,
        template_id=batch.template_id,
        template_version_id=batch.template_version_id,
        metadata=batch.metadata_,
        tags=batch.tags,
        from_=batch.from_address,
        reply_to=batch.reply_to,
        unsubscribe=batch.unsubscribe,
        send_at=batch.send_at,
        created_at=batch.created_at,
        started_at=batch.started_at,
        completed_at=batch.completed_at,
        result=service.batch_result(batch.status, counts),
        total=batch.total_recipients,
        duplicates=batch.duplicate_count,
        counts=counts,
    )


async def batches_out(session: Session, batches: list[Batch]) -> list[BatchOut]:
    counts = await service.status_counts(session, batches)
    return [batch_out(b, counts[b.id]) for b in batches]


@router.post(
    "",
    status_code=201,
    response_model=BatchCreated,
    openapi_extra={**_BATCH_BODY, **IDEMPOTENCY_KEY_DOC},
    responses={409: {"description": "Idempotency-Key reused with another body"}},
)
async def create_batch(request: Request) -> JsonResponse:
    """Create a batch and queue its emails. Durable in the database before 201 is answered;
    queued right after the commit (and by the reconciler if the queue is down)."""
    # The key is checked, the headers and body read and the unit of work opened here, not
    # by dependencies and parameters (SendKey, Session, Header, BackgroundTasks): FastAPI's
    # solving of them cost ~0.15 ms of a small POST's CPU (bench/api, issue 18; see
    # `require` and `idempotency_key`).
    principal = await require(request, Scope.SEND)
    key = idempotency_key(request)
    state = state_of(request)
    body = await request.body()
    parsed = parse_request(body, max_recipients=state.settings.max_batch_recipients)
    background = BackgroundTasks()  # the after-commit enqueue, run once the 201 is sent
    async with request_session(state, False, background) as session:
        await service.writes_in_one_statement(session, parsed, state.driver_pool)
        result = await service.create_batch(
            session,
            principal,
            parsed,
            body_hash=service.request_hash(body),
            idempotency_key=key,
            chunk_size=state.settings.chunk_size,
            queue=state.queue,
        )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JsonResponse(result.response, status_code=201, headers=headers, background=background)


@router.get("", response_model=PageOut[BatchOut])
async def list_batches(
    session: Session,
    page: Paging,
    _: SendKey,
    status: Annotated[BatchStatus | None, Query()] = None,
) -> PageOut[BatchOut]:
    rows, total = await service.list_batches(
        session, limit=page.limit, offset=page.offset, status=status
    )
    return PageOut[BatchOut](
        data=await batches_out(session, list(rows)),
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{batch_id}", response_model=BatchOut)
async def get_batch(batch_id: str, request: Request) -> ModelResponse:
    await require(request, Scope.SEND)  # not SendKey: see `require`
    async with state_of(request).reading() as reads:
        batch, counts = await service.batch_with_counts(reads, batch_id)
    return ModelResponse(batch_out(batch, counts))


EventPage = PageOut[EventOut]


@router.get("/{batch_id}/events", response_model=EventPage)
async def list_events(
    batch_id: str,
    request: Request,
    _: SendKey,
    type: Annotated[
        str | None,
        Query(
            max_length=32,
            description="only events of this type; a recipient status names the event "
            "that leads to it (BOUNCED: BOUNCE, DELIVERED: DELIVERY, COMPLAINED: COMPLAINT, "
            "RETRYING: RETRY, PENDING: QUEUED, UNSUBSCRIBED: UNSUBSCRIBE)",
            json_schema_extra={"enum": list(EVENT_TYPE_FILTERS)},
        ),
    ] = None,
    email: Annotated[
        str | None, Query(max_length=320, description="only events of this address")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> ModelResponse:
    event_type = None
    if type is not None:
        event_type = event_type_filter(type)
        if event_type is None:
            raise ValidationFailed(
                f"Unknown event type {type!r}.",
                details=[
                    {
                        "field": "query:type",
                        "message": "one of " + ", ".join(EVENT_TYPE_FILTERS),
                        "type": "enum",
                    }
                ],
            )
    async with state_of(request).reading() as reads:
        rows, total = await service.list_events(
            reads, batch_id, limit=limit, offset=offset, type_=event_type, email=email
        )
    return ModelResponse(
        EventPage(
            data=[EventOut.model_validate(e) for e in rows],
            total=total,
            limit=limit,
            offset=offset,
        )
    )


@router.get("/{batch_id}/summary", response_model=BatchSummary)
async def get_summary(batch_id: str, session: Session, state: State, _: SendKey) -> BatchSummary:
    transport = state.settings.mail_transport.value
    return BatchSummary(**await service.summary(session, batch_id, transport=transport))


@router.post("/{batch_id}/cancel", response_model=BatchOut)
async def cancel_batch(batch_id: str, session: Session, _: SendKey) -> BatchOut:
    """Cancel everything not yet sent. Messages already being sent finish."""
    return (await batches_out(session, [await service.cancel_batch(session, batch_id)]))[0]
