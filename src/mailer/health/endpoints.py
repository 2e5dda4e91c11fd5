"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from mailer.deps import ApiRoute, State
from mailer.migrate import current_revision, head_revision
from mailer.reputation import service as reputation
from mailer.responses import JsonResponse

router = APIRouter(tags=["health"], route_class=ApiRoute)
CHECK_TIMEOUT_S = 5


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process is up and serving."""
    return {"status": "ok"}


async def _check_database(state: State) -> dict[str, Any]:
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            current = await current_revision(conn)
    except Exception as exc:
        return {"ok": False, "error": f"database unreachable ({type(exc).__name__})"}
    head = head_revision()
    if current != head:
        return {"ok": False, "error": f"migrations not at head (at {current}, head {head})"}
    return {"ok": True, "revision": current}


async def _sending(state: State) -> dict[str, Any]:
    """Informational: a reputation pause does not make the API unready."""
    try:
        async with state.sessionmaker() as session:
            pause = await reputation.current(session)
    except Exception as exc:
        return {"ok": True, "paused": None, "error": type(exc).__name__}
    return {"ok": True, "paused": pause.paused, "reason": pause.reason}


async def _check_queue(state: State) -> dict[str, Any]:
    try:
        ok = await state.queue.ping()
    except Exception as exc:
        return {"ok": False, "error": f"queue unreachable ({type(exc).__name__})"}
    return {"ok": bool(ok)} if ok else {"ok": False, "error": "queue unreachable"}


@router.get("/ready", responses={503: {"description": "not ready; per-check detail"}})
async def ready(state: State) -> JsonResponse:
    """Readiness: database reachable, migrations at head, queue backend reachable."""
    results = await asyncio.gather(
        asyncio.wait_for(_check_database(state), timeout=CHECK_TIMEOUT_S),
        asyncio.wait_for(_check_queue(state), timeout=CHECK_TIMEOUT_S),
        asyncio.wait_for(_sending(state), timeout=CHECK_TIMEOUT_S),
        return_exceptions=True,
    )
    timed_out = {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_S} s"}
    checks: dict[str, Any] = {
        name: result if isinstance(result, dict) else timed_out
        for name, result in zip(("database", "queue", "sending"), results, strict=True)
    }
    # Only the database and the queue decide readiness; "sending" is informational, and a
    # slow answer from it (a busy database under load) must not take the API out of service.
    if not isinstance(results[2], dict):
        checks["sending"] = {"ok": True, "paused": None, "error": timed_out["error"]}
    ok = checks["database"].get("ok") and checks["queue"].get("ok")
    return JsonResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
    )
