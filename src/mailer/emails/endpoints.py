"""/emails: thin routes over emails.service (send) and emails.lookup (read)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Request

from mailer.auth.dependencies import SendKey, require
from mailer.batches.schemas import EventOut
from mailer.batches.service import request_hash
from mailer.deps import (
    IDEMPOTENCY_KEY_DOC,
    ApiRoute,
    Session,
    State,
    idempotency_key,
    request_session,
    state_of,
)
from mailer.emails import lookup, service
from mailer.emails.schemas import EmailCreate, EmailOut, EmailPage, EmailsCreated
from mailer.jsonbody import read_body, request_body_doc
from mailer.models.enums import RecipientStatus, Scope
from mailer.responses import JsonResponse, ModelResponse

router = APIRouter(prefix="/emails", tags=["emails"], route_class=ApiRoute)

_STATUSES: dict[str, Any] = {"enum": list(RecipientStatus)}


@router.post(
    "",
    status_code=202,
    response_model=EmailsCreated,
    openapi_extra={**request_body_doc(EmailCreate), **IDEMPOTENCY_KEY_DOC},
    responses={409: {"description": "Idempotency-Key reused with another body"}},
)
async def send_email(request: Request) -> JsonResponse:
    """Send one email, to one address or up to 50 (each its own message and id), in the
    transactional lane (served before bulk batches). Durable in the database before 202 is
    answered."""
    # The key is checked (before the body is read), the headers and body read and the unit
    # of work opened here, not by dependencies and parameters: see POST /batches.
    principal = await require(request, Scope.SEND)
    key = idempotency_key(request)
    body = await read_body(request, EmailCreate)
    state = state_of(request)
    background = BackgroundTasks()  # the after-commit enqueue, run once the 202 is sent
    async with request_session(state, False, background) as session:
        await service.writes_in_one_statement(session, body, state.driver_pool)
        result = await service.create_emails(
            session,
            principal,
            body,
            body_hash=request_hash(await request.body()),
            idempotency_key=key,
            chunk_size=state.settings.chunk_size,
            queue=state.queue,
        )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JsonResponse(result.response, status_code=202, headers=headers, background=background)


@router.get("", response_model=EmailPage)
async def list_emails(
    session: Session,
    state: State,
    _: SendKey,
    to: Annotated[str | None, Query(max_length=320, description="the address")] = None,
    status: Annotated[
        str | None,
        Query(max_length=16, description="a message status", json_schema_extra=_STATUSES),
    ] = None,
    batch_id: Annotated[str | None, Query(max_length=64)] = None,
    tag: Annotated[str | None, Query(max_length=600, description="name:value")] = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
    cursor: Annotated[str | None, Query(max_length=32, description="nextCursor")] = None,
    limit: Annotated[int, Query(ge=1, le=lookup.MAX_PAGE)] = 50,
) -> EmailPage:
    """Messages (single emails and batch recipients alike), newest first, page by page:
    pass the answer's nextCursor as `cursor`. Every filter is served by an index, alone or
    combined (docs/performance.md)."""
    page, next_cursor = await lookup.find_messages(
        session,
        to=to,
        status=status,
        batch_id=batch_id,
        tag=tag,
        since=since,
        cursor=cursor,
        limit=limit,
        mail_from=state.settings.mail_from,
    )
    return EmailPage(data=[EmailOut.model_validate(m) for m in page], next_cursor=next_cursor)


@router.get("/{email_id}", response_model=EmailOut)
async def get_email(email_id: str, request: Request) -> ModelResponse:
    """One message: its status, addresses, batch, template, provider id, times and events."""
    await require(request, Scope.SEND)  # not SendKey: see `require`
    state = state_of(request)
    async with state.reading() as reads:
        found = await lookup.get_message(reads, email_id, mail_from=state.settings.mail_from)
    return ModelResponse(
        EmailOut.model_validate(
            {**found, "events": [EventOut.model_validate(e) for e in found["events"]]}
        )
    )
