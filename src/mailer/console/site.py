"""The console application, mounted by the API at /console: its routes, the signed-in user,
CSRF, HTML errors and the security headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailer.console import sessions
from mailer.console.rendering import render_page
from mailer.console.security import SecurityHeadersMiddleware
from mailer.console.sessions import ConsoleUser
from mailer.deps import request_session
from mailer.errors import MailerError
from mailer.state import AppState

STATIC_DIR = Path(__file__).parent / "static"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(Exception):
    pass


class CsrfRefused(Exception):
    pass


def host_state(request: Request) -> AppState:
    state: AppState = request.app.state.host.state.mailer
    return state


async def get_db(request: Request, background: BackgroundTasks) -> AsyncIterator[AsyncSession]:
    """One database session per request, committed when the route returns; what the request
    registered with `after_commit` (queueing work) runs after the response is sent."""
    state = host_state(request)
    async with request_session(state, request.method in SAFE_METHODS, background) as session:
        yield session


Db = Annotated[AsyncSession, Depends(get_db, scope="function")]


async def current_user(request: Request, session: Db) -> ConsoleUser:
    """The signed-in user; on a state-changing request, only with its CSRF token."""
    user = await sessions.load(session, request.cookies.get(sessions.COOKIE))
    if user is None:
        await session.commit()  # keep the deletion of an expired session: raising rolls back
        raise SignInRequired
    if request.method not in SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER)
        if presented is None:
            ctype = request.headers.get("content-type", "")
            if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
                value = (await request.form()).get(CSRF_FIELD)
                presented = value if isinstance(value, str) else None
        if not user.csrf_matches(presented):
            raise CsrfRefused
    request.state.console_user = user
    return user


User = Annotated[ConsoleUser, Depends(current_user)]


def create_console(host: FastAPI) -> FastAPI:
    """The console app; `host` is the API app whose state (database, queue) it uses."""
    from mailer.console.pages import (
        addresses,
        batches,
        deadletters,
        domain,
        keys,
        login,
        overview,
        suppressions,
        templates,
        webhooks,
    )

    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    console.state.host = host
    for module in (
        login,
        overview,
        batches,
        addresses,
        templates,
        suppressions,
        deadletters,
        webhooks,
        keys,
        domain,
    ):
        console.include_router(module.router)
    console.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_error_pages(console)
    console.add_middleware(SecurityHeadersMiddleware)
    return console


def _install_error_pages(console: FastAPI) -> None:
    @console.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _: SignInRequired) -> Response:
        base = request.scope.get("root_path", "")
        if request.method in SAFE_METHODS and not request.url.path.endswith(".json"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{base}/login?next={quote(target)}", status_code=303)
        if request.url.path.endswith(".json") or "application/json" in request.headers.get(
            "accept", ""
        ):
            return Response('{"signedIn": false}', 401, media_type="application/json")
        return RedirectResponse(f"{base}/login", status_code=303)

    @console.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _: CsrfRefused) -> Response:
        return _error_page(
            request,
            403,
            "Request refused",
            "This form did not carry the console's security token (it may have come from "
            "another site, or the page is old). Reload the page and try again.",
        )

    @console.exception_handler(MailerError)
    async def _mailer_error(request: Request, exc: MailerError) -> Response:
        return _error_page(request, exc.status, "Something is not right", exc.message)

    @console.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        title = "Not found" if exc.status_code == 404 else "Request refused"
        return _error_page(request, exc.status_code, title, str(exc.detail))


def _error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    context: dict[str, Any] = {"title": title, "message": message, "status": status}
    return render_page(request, "error.html", context, status_code=status)
