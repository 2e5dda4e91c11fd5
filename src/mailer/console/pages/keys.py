"""API keys: list with last use, create (the key shown once), revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from mailer.auth import service as keys
from mailer.auth.schemas import KeyCreate
from mailer.console import sessions
from mailer.console.rendering import redirect_to, render_page
from mailer.console.site import Db, User, host_state

router = APIRouter()
LIMIT = 500


async def _page(
    request: Request,
    session: Db,
    *,
    created: keys.CreatedKey | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    rows, total = await keys.list_keys(session, limit=LIMIT, offset=0)
    return render_page(
        request,
        "keys.html",
        {
            "title": "API keys",
            "keys": rows,
            "total": total,
            "created": created,
            "error": error,
        },
        status_code=status,
    )


@router.get("/keys")
async def key_list(request: Request, session: Db, user: User) -> Response:
    return await _page(request, session)


@router.post("/keys")
async def create(
    request: Request,
    session: Db,
    user: User,
    name: Annotated[str, Form(max_length=200)] = "",
    scope: Annotated[str, Form(max_length=10)] = "send",
) -> Response:
    try:
        body = KeyCreate(name=name, admin=scope == "admin")
    except ValidationError as exc:
        message = "; ".join(str(e["msg"]) for e in exc.errors())
        return await _page(request, session, error=f"Name: {message}", status=422)
    created = await keys.create_key(session, body.name, admin=body.is_admin)
    # The secret is in this response only: the page answers the POST, nothing is cached.
    return await _page(request, session, created=created, status=201)


@router.post("/keys/{key_id}/revoke")
async def revoke(request: Request, key_id: str, session: Db, user: User) -> Response:
    await keys.revoke_key(session, key_id)
    await sessions.end_sessions_of_key(session, key_id)
    await session.commit()
    host_state(request).key_cache.clear()
    return redirect_to(request, "/keys")
