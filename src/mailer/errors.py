"""The errors services raise, and the one error format they become:
{"error": {"code", "message", "details"}}.

No web framework here: the worker and the CLI import these too. The FastAPI handlers that
turn them (and the framework's own errors) into responses are in `mailer.error_handlers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MailerError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details or [])
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def with_status(self, status: int) -> MailerError:
        self.status = status
        return self


class BadRequest(MailerError):
    status, code = 400, "bad_request"


class Unauthorized(MailerError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "A valid API key is required.") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class Forbidden(MailerError):
    status, code = 403, "forbidden"


class NotFound(MailerError):
    status, code = 404, "not_found"


class Conflict(MailerError):
    status, code = 409, "conflict"


class PayloadTooLarge(MailerError):
    status, code = 413, "payload_too_large"


class ValidationFailed(MailerError):
    status, code = 422, "validation_error"


class RateLimited(MailerError):
    status, code = 429, "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many requests; retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


class ServiceUnavailable(MailerError):
    status, code = 503, "unavailable"


def error_body(code: str, message: str, details: Sequence[Any] = ()) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": list(details)}}


def _field_path(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    out = ""
    for part in parts:
        if part.isdigit():
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "body"


def _duplicate_details(err: Any) -> list[dict[str, Any]]:
    """One field sent in both spellings (template_id and templateId): name both."""
    base = _field_path(err.get("loc", ()))
    prefix = "" if base == "body" else base + "."
    return [
        {
            "field": prefix + snake,
            "fields": [prefix + snake, prefix + camel],
            "message": f"sent as both {snake} and {camel}: send one",
            "type": "duplicate_field",
        }
        for snake, camel in err.get("ctx", {}).get("fields", [])
    ]


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as the API reports them. A field's path is spelled as the client sent
    it (Pydantic's `loc` holds the key it found, or the documented name when missing)."""
    details = []
    for err in errors:
        loc = err.get("loc", ())
        if err.get("type") == "duplicate_field":
            details.extend(_duplicate_details(err))
            continue
        if loc and loc[0] in ("query", "path", "header"):
            where = f"{loc[0]}:{_field_path(loc[1:])}"
        else:
            where = _field_path(loc)
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        details.append({"field": where, "message": message, "type": err.get("type")})
    return details
