"""FastAPI exception handlers: every MailerError, and every error the framework produces
itself (404, 405, 413, 415, 422, malformed JSON), answered in the one error format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailer.errors import MailerError, error_body, validation_details
from mailer.responses import JsonResponse

log = structlog.get_logger("mailer.errors")


def error_response(
    status: int,
    code: str,
    message: str,
    details: Sequence[Any] = (),
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status_code=status, headers=headers)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


def _allowed_methods(request: Request) -> str:
    """Every method of every route at this path (a 405 from Starlette names only the first
    route's: DELETE /batches would answer `Allow: POST` though GET works too)."""
    from mailer.routes import methods_at

    methods = methods_at(request.app, request.url.path)
    order = ("GET", "POST", "PUT", "PATCH", "DELETE")
    return ", ".join(sorted(methods, key=lambda m: (order.index(m) if m in order else 99, m)))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MailerError)
    async def _mailer_error(_: Request, exc: MailerError) -> JsonResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JsonResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "malformed_json", "The request body is not valid JSON.")
        details = validation_details(errors, exc.body)
        fields = ", ".join(d["field"] for d in details[:5])
        return error_response(
            422, "validation_error", f"The request is not valid ({fields}).", details
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and message == "Not Found":
            message = "No such resource."
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            message = "Method not allowed on this resource."
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return error_response(exc.status_code, code, message, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JsonResponse:
        from asyncpg.exceptions import InterfaceError as DriverInterfaceError
        from asyncpg.exceptions import InternalClientError as DriverStateError
        from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

        # The hot paths' hand-written statements raise asyncpg's errors unwrapped (sqlstate
        # on the error itself); SQLAlchemy wraps them (on `orig`).
        sqlstate = str(
            getattr(getattr(exc, "orig", None), "sqlstate", "")
            or getattr(exc, "sqlstate", "")
            or ""
        )
        if sqlstate == "22021":
            # A NUL in a query or path parameter (bodies are checked before this): PostgreSQL
            # text cannot hold it. The client's data, not an outage.
            log.warning("invalid_character", path=request.url.path)
            return error_response(
                422,
                "invalid_character",
                "A value in the request contains a character that cannot be stored (NUL).",
            )
        if isinstance(exc, (DataError, OverflowError)) or sqlstate.startswith("22"):
            # A value the database cannot store (an integer beyond 64 bits, ...) that input
            # validation let through: the client's data, not an outage.
            log.warning("value_out_of_range", error=type(exc).__name__, path=request.url.path)
            return error_response(
                422, "value_out_of_range", "A value in the request is out of the storable range."
            )
        if isinstance(exc, IntegrityError):
            # A uniqueness race between concurrent requests: the client may retry.
            log.warning("integrity_conflict", path=request.url.path)
            return error_response(
                409, "conflict", "A concurrent request changed this resource; retry."
            )
        # 08: connection exceptions, 57: the server shutting down or not accepting yet.
        if isinstance(
            exc,
            (
                OperationalError,
                DBAPIError,
                ConnectionError,
                OSError,
                DriverInterfaceError,
                DriverStateError,  # a connection the server dropped mid-use, as seen by asyncpg
            ),
        ) or sqlstate.startswith(("08", "57")):
            log.error("dependency_unavailable", error=type(exc).__name__, path=request.url.path)
            return error_response(
                503,
                "unavailable",
                "A backing service is unavailable; retry shortly.",
                headers={"Retry-After": "5"},
            )
        log.exception("unhandled_error", path=request.url.path)
        return error_response(500, "internal_error", "An internal error occurred.")
