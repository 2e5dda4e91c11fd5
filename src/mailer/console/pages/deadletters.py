"""Dead letters: list, retry one or all, purge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from mailer.console import repository
from mailer.console.rendering import redirect_to, render_page
from mailer.console.site import Db, User, host_state
from mailer.deadletters import service as dead_letters

router = APIRouter()
PAGE = 50


@router.get("/dead-letters")
async def dead_letter_list(
    request: Request,
    session: Db,
    user: User,
    after: Annotated[int | None, Query(ge=0)] = None,
    retried: Annotated[int | None, Query(ge=0)] = None,
    purged: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    rows = await repository.dead_letters_page(session, after=after, limit=PAGE)
    return render_page(
        request,
        "deadletters.html",
        {
            "title": "Dead letters",
            "rows": rows[:PAGE],
            "next_after": rows[PAGE - 1].id if len(rows) > PAGE else None,
            "retried": retried,
            "purged": purged,
        },
    )


@router.post("/dead-letters/retry")
async def retry(
    request: Request,
    session: Db,
    user: User,
    dead_letter_id: Annotated[int | None, Form(ge=0)] = None,
) -> Response:
    ids = [dead_letter_id] if dead_letter_id is not None else None
    # The service queues the chunks once this request's transaction commits.
    result = await dead_letters.retry_dead_letters(session, host_state(request).queue, ids)
    return redirect_to(request, f"/dead-letters?retried={result.recipients}")


@router.post("/dead-letters/purge")
async def purge(
    request: Request,
    session: Db,
    user: User,
    dead_letter_id: Annotated[int | None, Form(ge=0)] = None,
) -> Response:
    ids = [dead_letter_id] if dead_letter_id is not None else None
    deleted = await dead_letters.purge_dead_letters(session, ids=ids)
    return redirect_to(request, f"/dead-letters?purged={deleted}")
