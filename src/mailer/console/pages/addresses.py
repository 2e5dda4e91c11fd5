"""One address across every batch: its messages, their events, its suppression."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from mailer.addresses import try_normalize_email
from mailer.console import repository
from mailer.console.rendering import render_page
from mailer.console.site import Db, User
from mailer.models import Event
from mailer.suppressions import service as suppressions

router = APIRouter()
MESSAGES = 100
EVENTS = 500


@router.get("/addresses")
async def address_search(
    request: Request,
    session: Db,
    user: User,
    email: Annotated[str | None, Query(max_length=320)] = None,
) -> Response:
    context: dict[str, object] = {"title": "Address search", "email": email or ""}
    raw = (email or "").strip()
    if raw:
        normal = try_normalize_email(raw)
        # Recipients keep the address as the batch gave it: look for it as typed and in its
        # normal form (an address that no longer validates is still found as typed).
        messages = list(await repository.messages_to(session, raw, limit=MESSAGES))
        if normal is not None and normal != raw:
            messages += await repository.messages_to(session, normal, limit=MESSAGES)
        events = await repository.events_of(session, [m.id for m in messages], limit=EVENTS)
        by_message: dict[int, list[Event]] = {}
        for event in events:
            if event.recipient_id is not None:
                by_message.setdefault(event.recipient_id, []).append(event)
        context.update(
            searched=True,
            invalid=normal is None,
            messages=messages,
            events=by_message,
            suppression=await suppressions.get(session, normal) if normal else None,
        )
    return render_page(request, "addresses.html", context)
