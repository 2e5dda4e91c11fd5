"""ASGI middleware: request ids + access log, and the request body limit / content type.

Pure ASGI (not BaseHTTPMiddleware) so bodies stream through untouched and the size limit
is enforced while reading: an oversized body is refused with 413 before it is all read.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailer.errors import error_body
from mailer.responses import JsonResponse

access_log = structlog.get_logger("mailer.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else new_request_id()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            where = _nul_in_target(scope)
            if where is not None:
                # Checked here, before any route: PostgreSQL text cannot hold NUL, and every
                # backend should answer alike (bodies are checked by the request models).
                await JsonResponse(
                    error_body(
                        "invalid_character",
                        f"The request {where} contains a NUL character.",
                        [{"field": where, "message": "must not contain NUL (\\u0000)"}],
                    ),
                    status_code=422,
                )(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            observe = scope.get("state", {}).get("observe_request")
            if callable(observe):
                observe(scope, status, duration_ms)
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=duration_ms,
            )
            structlog.contextvars.clear_contextvars()


class _RequestIds:
    """Request ids: 32 hex characters, as a uuid4's, made of a random prefix drawn once per
    process (again in a forked child) and a counter. uuid4 reads the OS's random source on
    every request, a system call."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(secrets.randbits(32))

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


new_request_id = _RequestIds()


def _nul_in_target(scope: Scope) -> str | None:
    if "\x00" in scope["path"]:
        return "path"
    if b"%00" in scope.get("query_string", b""):
        return "query string"
    return None


class BodyLimitMiddleware:
    """413 for bodies over their limit (by Content-Length or while streaming); 415 for
    non-JSON bodies on JSON endpoints.

    The limit is the first of `route_limits` (path prefix, bytes) whose prefix the path
    starts with, else `default_limit`; never more than `max_bytes` (MAX_BODY_BYTES)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        non_json_paths: tuple[str, ...],
        route_limits: tuple[tuple[str, int], ...] = (),
        default_limit: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.non_json_paths = non_json_paths
        self.route_limits = tuple((prefix, min(limit, max_bytes)) for prefix, limit in route_limits)
        self.default_limit = min(default_limit or max_bytes, max_bytes)

    def _limit(self, path: str) -> int:
        for prefix, limit in self.route_limits:
            if path.startswith(prefix):
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        max_bytes = self._limit(path)
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            await _reject(scope, receive, send, 413, self._too_large(max_bytes))
            return
        ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        has_body = (length is not None and length != "0") or _header(
            scope, b"transfer-encoding"
        ) is not None
        if (
            has_body
            and not path.startswith(self.non_json_paths)
            and not (ctype == "application/json" or ctype.endswith("+json"))
        ):
            await _reject(
                scope,
                receive,
                send,
                415,
                error_body(
                    "unsupported_media_type",
                    f"Send JSON with 'Content-Type: application/json' (got {ctype or 'none'!r}).",
                ),
            )
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # An HTTPException, not a MailerError: FastAPI re-raises HTTPExceptions
                    # from body reading but turns anything else into "400 error parsing the
                    # body". The app's handler answers 413 in the usual format.
                    detail = self._too_large(max_bytes)["error"]["message"]
                    raise HTTPException(413, detail=detail)
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self, max_bytes: int) -> dict[str, Any]:
        which = "MAX_BODY_BYTES" if max_bytes == self.max_bytes else "for this endpoint"
        return error_body(
            "payload_too_large",
            f"The request body exceeds the limit of {max_bytes} bytes ({which}).",
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _reject(
    scope: Scope, receive: Receive, send: Send, status: int, body: dict[str, Any]
) -> None:
    response = JsonResponse(body, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)
