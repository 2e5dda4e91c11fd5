"""/admin/keys: create, list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from mailer.auth import service
from mailer.auth.dependencies import AdminKey
from mailer.auth.schemas import KeyCreate, KeyCreated, KeyOut
from mailer.deps import ApiRoute, Paging, Session, State
from mailer.jsonbody import json_body, request_body_doc
from mailer.schemas import PageOut

router = APIRouter(prefix="/admin/keys", tags=["admin"], route_class=ApiRoute)


@router.post(
    "", status_code=201, response_model=KeyCreated, openapi_extra=request_body_doc(KeyCreate)
)
async def create_key(
    _: AdminKey, body: Annotated[KeyCreate, json_body(KeyCreate)], session: Session
) -> KeyCreated:
    created = await service.create_key(session, body.name, admin=body.is_admin)
    key = created.key
    return KeyCreated(
        id=key.id,
        key=created.secret,
        name=key.name,
        prefix=key.prefix,
        scopes=sorted(key.scope_set),
        created_at=key.created_at,
    )


@router.get("", response_model=PageOut[KeyOut])
async def list_keys(session: Session, page: Paging, _: AdminKey) -> PageOut[KeyOut]:
    rows, total = await service.list_keys(session, limit=page.limit, offset=page.offset)
    return PageOut[KeyOut](
        data=[KeyOut.model_validate(r) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post("/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: str, session: Session, state: State, _: AdminKey) -> KeyOut:
    key = await service.revoke_key(session, key_id)
    # Committed here, not after the response, so this process forgets the key before the
    # caller hears back; other processes hear the NOTIFY sent at commit.
    await session.commit()
    state.key_cache.clear()
    return KeyOut.model_validate(key)
