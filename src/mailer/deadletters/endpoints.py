"""/admin/dead-letters: list, retry, purge."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from mailer.auth.dependencies import AdminKey
from mailer.deadletters import service
from mailer.deadletters.schemas import DeadLetterOut, PurgeOut, RetryOut, RetryRequest
from mailer.deps import ApiRoute, Paging, Session, State
from mailer.jsonbody import json_body, request_body_doc
from mailer.schemas import PageOut

router = APIRouter(prefix="/admin/dead-letters", tags=["admin"], route_class=ApiRoute)


@router.get("", response_model=PageOut[DeadLetterOut])
async def list_dead_letters(
    session: Session,
    page: Paging,
    _: AdminKey,
    batch_id: Annotated[str | None, Query(max_length=64, description="only this batch's")] = None,
) -> PageOut[DeadLetterOut]:
    rows, total = await service.list_dead_letters(
        session, limit=page.limit, offset=page.offset, batch_id=batch_id
    )
    return PageOut[DeadLetterOut](
        data=[DeadLetterOut.model_validate(r) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/retry",
    response_model=RetryOut,
    openapi_extra=request_body_doc(RetryRequest, required=False),
)
async def retry_dead_letters(
    _: AdminKey,
    body: Annotated[RetryRequest | None, json_body(RetryRequest, optional=True)],
    session: Session,
    state: State,
) -> RetryOut:
    """Send the dead letters' recipients again (all, or the ids given)."""
    result = await service.retry_dead_letters(session, state.queue, body.ids if body else None)
    return RetryOut(
        dead_letters=result.dead_letters, recipients=result.recipients, jobs=len(result.jobs)
    )


@router.delete("", response_model=PurgeOut)
async def purge_dead_letters(
    session: Session,
    _: AdminKey,
    before: Annotated[datetime | None, Query(description="only those failed before")] = None,
) -> PurgeOut:
    return PurgeOut(deleted=await service.purge_dead_letters(session, before=before))
