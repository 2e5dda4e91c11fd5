"""One address across every batch: its messages, their events, its suppression."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from mailer.addresses import try_normalize_email
from mailer.console import repository
from mailer.console.rendering import render_page
from mailer.console.site import Db, User
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
    if email:
        normal = try_normalize_email(email.strip())
        if normal is None:
            context["invalid"] = True
        else:
            # Recipients keep the address as the batch gave it; look for both forms.
            messages = await repository.messages_to(session, email.strip(), limit=MESSAGES)
            if normal != email.strip():
                messages = [
                    *messages,
                    *await repository.messages_to(session, normal, limit=MESSAGES),
                ]
            events = await repository.events_of(session, [m.id for m in messages], limit=EVENTS)
            by_message: dict[int, list[object]] = {}
            for event in events:
                if event.recipient_id is not None:
                    by_message.setdefault(event.recipient_id, []).append(event)
            context.update(
                normal=normal,
                messages=messages,
                events=by_message,
                suppression=await suppressions.get(session, normal),
            )
    return render_page(request, "addresses.html", context)
