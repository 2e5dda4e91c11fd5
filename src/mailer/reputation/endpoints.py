"""/admin/sending: the reputation guard's pause, as seen and controlled by an admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from mailer.auth.dependencies import AdminKey
from mailer.deps import ApiRoute, Session
from mailer.jsonbody import json_body, request_body_doc
from mailer.reputation import service
from mailer.reputation.schemas import PauseRequest, SendingState

router = APIRouter(prefix="/admin/sending", tags=["admin"], route_class=ApiRoute)


def _out(state: service.PauseState) -> SendingState:
    return SendingState(
        paused=state.paused, reason=state.reason, since=state.since, resumed_at=state.resumed_at
    )


@router.get("", response_model=SendingState)
async def sending_state(session: Session, _: AdminKey) -> SendingState:
    return _out(await service.current(session))


@router.post(
    "/pause",
    response_model=SendingState,
    openapi_extra=request_body_doc(PauseRequest, required=False),
)
async def pause_sending(
    principal: AdminKey,
    body: Annotated[PauseRequest | None, json_body(PauseRequest, optional=True)],
    session: Session,
) -> SendingState:
    reason = body.reason if body else "paused by an admin"
    return _out(await service.pause(session, reason, by=f"api-key:{principal.key_id}"))


@router.post("/resume", response_model=SendingState)
async def resume_sending(session: Session, principal: AdminKey) -> SendingState:
    """Resume bulk sending after a reputation pause. Only sends after now are judged."""
    return _out(await service.resume(session, by=f"api-key:{principal.key_id}"))
