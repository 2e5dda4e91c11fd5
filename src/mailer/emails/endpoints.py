"""/emails: thin routes over emails.service (send) and emails.lookup (read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from mailer.auth.dependencies import SendKey
from mailer.batches.service import request_hash
from mailer.deps import ApiRoute, Session, State
from mailer.emails import service
from mailer.emails.schemas import EmailCreate, EmailsCreated
from mailer.jsonbody import json_body, request_body_doc
from mailer.responses import JsonResponse

router = APIRouter(prefix="/emails", tags=["emails"], route_class=ApiRoute)

CreateBody = Annotated[EmailCreate, json_body(EmailCreate)]


@router.post(
    "",
    status_code=202,
    response_model=EmailsCreated,
    openapi_extra=request_body_doc(EmailCreate),
    responses={409: {"description": "Idempotency-Key reused with another body"}},
)
async def send_email(
    request: Request,
    body: CreateBody,
    session: Session,
    state: State,
    principal: SendKey,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JsonResponse:
    """Send one email, to one address or up to 50 (each its own message and id), in the
    transactional lane (served before bulk batches). Durable in the database before 202 is
    answered."""
    result = await service.create_emails(
        session,
        principal,
        body,
        body_hash=request_hash(await request.body()),
        idempotency_key=idempotency_key,
        chunk_size=state.settings.chunk_size,
        queue=state.queue,
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JsonResponse(result.response, status_code=202, headers=headers)
