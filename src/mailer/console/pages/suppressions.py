"""Suppressions: search, add, remove, CSV import (with progress in the page) and export."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from mailer.addresses import InvalidAddress
from mailer.console import repository
from mailer.console.rendering import redirect_to, render_page
from mailer.console.site import Db, User
from mailer.models.enums import SuppressionReason
from mailer.suppressions import service as suppressions

router = APIRouter()
PAGE = 50
NOTICES = {
    "added": "Address suppressed.",
    "exists": "That address was already suppressed (its first reason is kept).",
    "removed": "Address removed from the suppression list.",
    "missing": "That address was not on the suppression list.",
}


def _page(
    request: Request,
    rows: list[object],
    *,
    q: str,
    next_after: str | None,
    notice: str | None = None,
    error: str | None = None,
    imported: suppressions.ImportResult | None = None,
    status: int = 200,
) -> Response:
    return render_page(
        request,
        "suppressions.html",
        {
            "title": "Suppressions",
            "rows": rows,
            "q": q,
            "next_after": next_after,
            "notice": NOTICES.get(notice or ""),
            "error": error,
            "imported": imported,
            "reasons": [r.value for r in SuppressionReason],
        },
        status_code=status,
    )


@router.get("/suppressions")
async def suppression_list(
    request: Request,
    session: Db,
    user: User,
    q: Annotated[str | None, Query(max_length=320)] = None,
    after: Annotated[str | None, Query(max_length=320)] = None,
    notice: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    prefix = (q or "").strip().lower() or None
    rows = await repository.suppressions_page(session, prefix=prefix, after=after, limit=PAGE)
    return _page(
        request,
        list(rows[:PAGE]),
        q=q or "",
        next_after=rows[PAGE - 1].email if len(rows) > PAGE else None,
        notice=notice,
    )


def _back(request: Request, notice: str) -> Response:
    return redirect_to(request, f"/suppressions?notice={notice}")


@router.post("/suppressions/add")
async def add(
    request: Request,
    session: Db,
    user: User,
    email: Annotated[str, Form(max_length=320)] = "",
    reason: Annotated[str, Form(max_length=16)] = SuppressionReason.MANUAL.value,
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    if reason not in {r.value for r in SuppressionReason}:
        reason = SuppressionReason.MANUAL.value
    source = {"type": "console", "apiKeyId": user.key_id, **({"note": note} if note else {})}
    try:
        added = await suppressions.add(session, [email], reason, source)
    except InvalidAddress as exc:
        return _page(
            request,
            [],
            q="",
            next_after=None,
            error=f"{email!r} is not a valid address: {exc}",
            status=422,
        )
    return _back(request, "added" if added else "exists")


@router.post("/suppressions/remove")
async def remove(
    request: Request,
    session: Db,
    user: User,
    email: Annotated[str, Form(max_length=320)] = "",
) -> Response:
    removed = await suppressions.remove(session, email)
    return _back(request, "removed" if removed else "missing")


@router.post("/suppressions/import")
async def import_csv(
    request: Request,
    session: Db,
    user: User,
    file: Annotated[UploadFile, File()],
) -> Response:
    text = io.TextIOWrapper(file.file, encoding="utf-8-sig", errors="replace", newline="")
    result = await suppressions.import_csv(
        session, text, source={"type": "console-import", "apiKeyId": user.key_id}
    )
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(
            {
                "rows": result.rows,
                "added": result.added,
                "invalid": result.invalid,
                "skipped": result.skipped,
                "errors": [
                    {"line": line, "email": email, "message": message}
                    for line, email, message in result.errors
                ],
            }
        )
    return _page(request, [], q="", next_after=None, imported=result)


@router.get("/suppressions/export.csv")
async def export_csv(session: Db, user: User) -> Response:
    buffer = io.StringIO()
    await suppressions.export_csv(session, buffer)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
    )
