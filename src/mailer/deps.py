"""Request dependencies shared by every router: state and the per-request session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import BackgroundTasks, Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic.alias_generators import to_camel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.types import Scope

from mailer.db.after_commit import run_logged
from mailer.db.engine import session_scope
from mailer.error_handlers import error_response
from mailer.errors import ValidationFailed
from mailer.responses import JsonResponse
from mailer.state import AppState


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a thread
# pool, a thread hand-off per request.
async def get_state(request: Request) -> AppState:
    return state_of(request)


State = Annotated[AppState, Depends(get_state)]


def state_of(request: Request) -> AppState:
    """The state, for the hot routes: they take `request: Request` rather than `State`, as
    FastAPI solves each dependency at ~5 % of such a request's CPU (bench/api, issue 18)."""
    state: AppState = request.app.state.mailer
    return state


# Requests that only read (the unsubscribe page, say, changes nothing on GET).
READ_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request, background: BackgroundTasks) -> AsyncIterator[AsyncSession]:
    """One session per request. Commits when the endpoint returns, before the response is
    sent, so anything acknowledged is durable; rolls back on any error. What the request
    registered with `after_commit` runs after the response is sent."""
    state: AppState = request.app.state.mailer
    async with request_session(state, request.method in READ_METHODS, background) as session:
        yield session


def request_session(
    state: AppState, read_only: bool, background: BackgroundTasks
) -> AbstractAsyncContextManager[AsyncSession]:
    """A request's unit of work (the API's and the console's): a read-only request gets a
    read session. What it registered with `after_commit` runs after the response is sent."""
    maker = state.read_sessionmaker if read_only else state.sessionmaker
    return session_scope(maker, defer=lambda callback: background.add_task(run_logged, callback))


Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


IDEMPOTENCY_KEY_MAX_LENGTH = 255
# The header in the OpenAPI document of the routes that read it with `idempotency_key`.
IDEMPOTENCY_KEY_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Send the same key again (with the same body) within 24 hours to "
            "get the first request's answer instead of a second send.",
            "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
        }
    ]
}


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header, read in the route body of the small POSTs
    rather than declared as a `Header` parameter: FastAPI's solving of that parameter and
    of `BackgroundTasks` cost ~5 % of a single-recipient POST's CPU (bench/api, issue 18).
    Blank keys are the services' to refuse (they name the same field)."""
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ValidationFailed(
            f"The Idempotency-Key header is longer than {IDEMPOTENCY_KEY_MAX_LENGTH} characters.",
            details=[
                {
                    "field": "header:Idempotency-Key",
                    "message": f"at most {IDEMPOTENCY_KEY_MAX_LENGTH} characters",
                    "type": "string_too_long",
                }
            ],
        )
    return key


# Largest offset the databases take (a signed 64-bit integer).
MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


# The paging query parameters, for a hot route that takes them itself rather than Paging
# (each dependency FastAPI solves cost ~8 % of a hot GET's CPU, bench/api).
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]


async def get_page(limit: Limit = 100, offset: Offset = 0) -> Page:
    return Page(limit, offset)


Paging = Annotated[Page, Depends(get_page)]


# --------------------------------------------------------------------------- query parameters


def _query_names(dependant: Dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


class _QueryRules:
    """Query parameters of one route: snake_case is the documented spelling, camelCase is
    accepted (and rewritten to snake_case before the route reads it); a name the route does
    not take, or both spellings of one name, is refused with 422."""

    __slots__ = ("accepted", "camel")

    def __init__(self, names: set[str]) -> None:
        self.accepted = frozenset(names)
        self.camel = {to_camel(n): n for n in names if to_camel(n) != n}

    def apply(self, scope: Scope) -> JsonResponse | None:
        """Rewrite the query string in `scope` if needed; a 422 response if refused."""
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        unknown: list[str] = []
        renamed = False
        for i, (name, value) in enumerate(pairs):
            if name in self.accepted:
                continue
            snake = self.camel.get(name)
            if snake is None:
                unknown.append(name)
            else:
                pairs[i], renamed = (snake, value), True
        takes = (
            f" (this endpoint takes {', '.join(sorted(self.accepted))})" if self.accepted else ""
        )
        details: list[dict[str, Any]] = [
            {
                "field": f"query:{name}",
                "message": "unknown query parameter" + takes,
                "type": "unknown_parameter",
            }
            for name in dict.fromkeys(unknown)
        ]
        if renamed:
            sent = {name for name, _ in parse_qsl(scope["query_string"].decode("latin-1"))}
            details.extend(
                {
                    "field": f"query:{snake}",
                    "fields": [f"query:{snake}", f"query:{camel}"],
                    "message": f"sent as both {snake} and {camel}: send one",
                    "type": "duplicate_field",
                }
                for camel, snake in self.camel.items()
                if camel in sent and snake in sent
            )
        if details:
            fields = ", ".join(d["field"] for d in details[:5])
            return error_response(
                422, "validation_error", f"The request is not valid ({fields}).", details
            )
        if renamed:
            scope["query_string"] = urlencode(pairs).encode("latin-1")
        return None


class ApiRoute(APIRoute):
    """Every API route (`APIRouter(route_class=ApiRoute)`) but those others call by a URL
    they were given (the SES webhook, the unsubscribe link: a mail client may append
    parameters): applies the query parameter rules above. A request without a query string
    costs one test."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        rules = _QueryRules(_query_names(self.dependant))

        async def checked(request: Request) -> Response:
            if request.scope["query_string"]:
                refused = rules.apply(request.scope)
                if refused is not None:
                    return refused
            return await handler(request)

        return checked
