"""/admin/suppressions: list, add, remove."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from mailer.addresses import InvalidAddress, normalize_email
from mailer.auth.dependencies import AdminKey
from mailer.deps import ApiRoute, Paging, Session
from mailer.errors import NotFound, ValidationFailed
from mailer.jsonbody import json_body, request_body_doc
from mailer.models.enums import SuppressionReason
from mailer.schemas import PageOut
from mailer.suppressions import service
from mailer.suppressions.schemas import SuppressionAdded, SuppressionCreate, SuppressionOut

router = APIRouter(prefix="/admin/suppressions", tags=["admin"], route_class=ApiRoute)


@router.get("", response_model=PageOut[SuppressionOut])
async def list_suppressions(
    session: Session,
    page: Paging,
    _: AdminKey,
    reason: Annotated[SuppressionReason | None, Query()] = None,
    search: Annotated[str | None, Query(max_length=320, description="address contains")] = None,
) -> PageOut[SuppressionOut]:
    rows, total = await service.list(
        session, limit=page.limit, offset=page.offset, reason=reason, search=search
    )
    return PageOut[SuppressionOut](
        data=[SuppressionOut.model_validate(r) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "",
    status_code=201,
    response_model=SuppressionAdded,
    openapi_extra=request_body_doc(SuppressionCreate),
)
async def add_suppressions(
    principal: AdminKey,
    body: Annotated[SuppressionCreate, json_body(SuppressionCreate)],
    session: Session,
) -> SuppressionAdded:
    addresses = body.addresses
    problems = []
    for index, address in enumerate(addresses):
        try:
            normalize_email(address)
        except InvalidAddress as exc:
            problems.append({"index": index, "field": "emails", "message": f"{address!r}: {exc}"})
    if problems:
        raise ValidationFailed(f"{len(problems)} invalid address(es).", details=problems[:100])
    source = {"type": "api", "apiKeyId": principal.key_id}
    if body.note:
        source["note"] = body.note
    added = await service.add(session, addresses, body.reason, source)
    return SuppressionAdded(added=added, requested=len(addresses))


@router.delete("/{email}", status_code=204)
async def remove_suppression(email: str, session: Session, _: AdminKey) -> Response:
    if not await service.remove(session, email):
        raise NotFound(f"{email!r} is not on the suppression list.")
    return Response(status_code=204)
