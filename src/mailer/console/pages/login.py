"""Sign in with an admin API key, sign out."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from mailer.console import sessions
from mailer.console.rendering import redirect_to, render_page
from mailer.console.site import CSRF_FIELD, Db, User, host_state

router = APIRouter()
# Sign-in has no session yet: its form is protected by a token that must match a cookie.
LOGIN_COOKIE = "mailer_console_login"


def _cookie_options(request: Request) -> dict[str, object]:
    secure = (host_state(request).settings.public_url or "").startswith("https://")
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": secure,
        "path": request.scope.get("root_path", "") or "/",
    }


def _safe_next(request: Request, target: str | None) -> str:
    base: str = request.scope.get("root_path", "")
    if (
        target
        and target.startswith(base + "/")
        and not target.startswith("//")
        and not any(c in target for c in "\\\r\n")
    ):
        return target
    return base + "/"


def _login_page(
    request: Request, *, error: str | None = None, next_: str | None = None, status: int = 200
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render_page(
        request,
        "login.html",
        {"title": "Sign in", "error": error, "login_token": token, "next": next_ or ""},
        status_code=status,
    )
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **_cookie_options(request))  # type: ignore[arg-type]
    return response


@router.get("/login")
async def login_form(request: Request, session: Db, next: str | None = None) -> Response:
    if await sessions.load(session, request.cookies.get(sessions.COOKIE)) is not None:
        return RedirectResponse(_safe_next(request, next), status_code=303)
    return _login_page(request, next_=next)


@router.post("/login")
async def login(
    request: Request,
    session: Db,
    key: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        return _login_page(
            request,
            error="The sign-in form expired. Please try again.",
            next_=next,
            status=403,
        )
    if not key.strip():
        return _login_page(request, error="Enter an API key.", next_=next, status=422)
    try:
        token = await sessions.sign_in(session, key)
    except sessions.LoginRefused as refused:
        return _login_page(request, error=refused.message, next_=next, status=403)
    response = RedirectResponse(_safe_next(request, next), status_code=303)
    response.set_cookie(sessions.COOKIE, token, **_cookie_options(request))  # type: ignore[arg-type]
    response.delete_cookie(LOGIN_COOKIE, path=request.scope.get("root_path", "") or "/")
    return response


@router.post("/logout")
async def logout(request: Request, session: Db, user: User) -> Response:
    await sessions.sign_out(session, user)
    response = redirect_to(request, "/login")
    response.delete_cookie(sessions.COOKIE, path=request.scope.get("root_path", "") or "/")
    return response
