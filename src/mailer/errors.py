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


_NOT_SENT = object()


def _as_sent(loc: Sequence[Any], body: Any, error_type: Any) -> tuple[Any, ...]:
    """`loc` without the names Pydantic gives the members of a union (`str | list[str]`
    fails as `to.str` and `to.list[str]`): walking what the client sent, a part is a key or
    an index of it; anything else is such a name. A missing field is a key not sent."""
    start = 1 if loc and loc[0] == "body" else 0
    out: list[Any] = list(loc[:start])
    node = body
    for position, part in enumerate(loc[start:], start=start):
        if isinstance(node, dict) and isinstance(part, str):
            last = position == len(loc) - 1
            if part in node or (last and error_type == "missing"):
                out.append(part)
                node = node.get(part, _NOT_SENT)
            continue  # a union member's name
        if isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if 0 <= part < len(node) else _NOT_SENT
            continue
        if node is _NOT_SENT:
            out.append(part)
        # else: a scalar was sent here; `part` names a union member
    return tuple(out)


def validation_details(errors: Sequence[Any], body: Any = None) -> list[dict[str, Any]]:
    """Pydantic errors as the API reports them. A field's path is spelled as the client sent
    it (Pydantic's `loc` holds the key it found, or the documented name when missing). Given
    the `body` that was validated (None: not known), the members of a union are not named
    in paths: a value of a member's shape (a list) reports that member's errors only, any
    other value one detail for the field."""
    found: list[tuple[str, str, Any, bool]] = []  # field, message, type, from a union
    details: list[dict[str, Any]] = []
    for err in errors:
        loc = err.get("loc", ())
        if err.get("type") == "duplicate_field":
            details.extend(_duplicate_details(err))
            continue
        sent = loc
        if loc and loc[0] in ("query", "path", "header"):
            where = f"{loc[0]}:{_field_path(loc[1:])}"
        else:
            if body is not None:
                sent = _as_sent(loc, body, err.get("type"))
            where = _field_path(sent)
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        found.append((where, message, err.get("type"), len(sent) != len(loc)))
    by_field: dict[str, dict[str, Any]] = {}
    for where, message, kind, union in found:
        if union and any(other.startswith((where + "[", where + ".")) for other, *_ in found):
            continue  # another member of the union took the value's shape
        if union and where in by_field:
            merged = by_field[where]
            if message not in merged["message"].split(", or "):
                merged["message"] += f", or {message}"
            continue
        detail = {"field": where, "message": message, "type": kind}
        by_field[where] = detail
        details.append(detail)
    return details
