"""Exceptions. Every answer of 400 or more becomes an `APIError` (or a subclass by status)
carrying the API's `{"error": {"code", "message", "details"}}`; a request that never got an
answer becomes a `MailerConnectionError`."""

from __future__ import annotations

from typing import Any

import httpx


class MailerClientError(Exception):
    """Base of every exception this package raises."""


class MailerConnectionError(MailerClientError):
    """No answer: the server could not be reached or the connection failed (after retries)."""


class UnexpectedResponseError(MailerClientError):
    """A success answer whose body is not what the call expects (not JSON, or not the
    documented shape: a proxy's page, or a server of another version)."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class APIError(MailerClientError):
    """The API answered with an error status.

    `status` is the HTTP status, `code` the API's error code (`validation_error`,
    `not_found`, ...), `message` its sentence, `details` its list (for a 422: one entry per
    bad field, `{"field", "message", "type"}`), `headers` the answer's headers.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: list[Any] = list(details or [])
        self.headers = headers if headers is not None else httpx.Headers()

    @property
    def fields(self) -> list[str]:
        """The fields the details name (`recipients[3].email`, `query:limit`)."""
        return [d["field"] for d in self.details if isinstance(d, dict) and "field" in d]


class BadRequestError(APIError):
    """400."""


class AuthenticationError(APIError):
    """401: the key is missing, wrong or revoked."""


class PermissionDeniedError(APIError):
    """403: the key lacks the scope (an admin route with a send key)."""


class NotFoundError(APIError):
    """404."""


class ConflictError(APIError):
    """409 (e.g. an Idempotency-Key reused with another body)."""


class PayloadTooLargeError(APIError):
    """413."""


class ValidationError(APIError):
    """422: `details` names each bad field."""


class RateLimitError(APIError):
    """429 after the retries ran out; `retry_after` is the server's hint in seconds."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class ServerError(APIError):
    """5xx after the retries ran out."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
}


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta-seconds form; an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error answer. A body that is not the API's error format (a proxy's
    HTML page) still gives the status, with code `http_<status>` and the text as message."""
    status = response.status_code
    code, message, details = f"http_{status}", response.reason_phrase or "error", []
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            message = text[:500]
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code", code))
            message = str(error.get("message", message))
            raw = error.get("details")
            details = raw if isinstance(raw, list) else []
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    return cls(status, code, message, details, response.headers)
