"""Bearer authentication with scopes, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request

from mailer.auth.keys import hash_key
from mailer.auth.principal import Principal
from mailer.auth.service import authenticate
from mailer.errors import Forbidden, RateLimited, Unauthorized
from mailer.models.enums import Scope
from mailer.state import AppState


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate_request(request: Request, state: AppState) -> Principal:
    """The request's principal from its Bearer key, or 401/429.

    The key is read in a read session of its own, not in the request's session: on SQLite
    the request's first statement would begin its write transaction (the write lock), which
    would then be held through whatever slow work the request does before it writes."""
    token = _bearer(request)
    if token is None:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    principal = state.key_cache.get(hash_key(token))
    if principal is None:
        async with state.read_sessionmaker() as session:
            principal = await authenticate(session, token, state.key_cache)
    if principal is None:
        raise Unauthorized("Invalid or revoked API key.")
    wait = state.key_limiter.check(principal.key_id)
    if wait is not None:
        raise RateLimited(wait)
    state.usage.record(principal.key_id)
    structlog.contextvars.bind_contextvars(api_key_id=principal.key_id)
    return principal


async def require(request: Request, scope: Scope) -> Principal:
    """The request's principal if its key has `scope`, else 401/403/429. The hottest
    routes (GET /batches/:id, GET /emails/:id) call this in their body instead of taking
    SendKey: FastAPI's solving of that one dependency cost ~8 % of such a request's CPU
    (bench/api, issue 18). tests/security/test_matrix.py checks every route either way."""
    state: AppState = request.app.state.mailer
    principal = await authenticate_request(request, state)
    if not principal.has(scope):
        raise Forbidden(f"This API key lacks the '{scope.value}' scope.", code="insufficient_scope")
    return principal


def _require(scope: Scope) -> object:
    # One dependency doing the whole check: FastAPI spends tens of µs per dependency it
    # solves, on every request.
    async def dependency(request: Request) -> Principal:
        return await require(request, scope)

    return dependency


SendKey = Annotated[Principal, Depends(_require(Scope.SEND))]
AdminKey = Annotated[Principal, Depends(_require(Scope.ADMIN))]
