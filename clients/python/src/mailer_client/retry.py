"""When to send a request again, and how long to wait first."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import httpx

from mailer_client.errors import parse_retry_after

# The request never reached the server: resending cannot do anything twice.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` tries in all (1: no retries). Waits `backoff`, then twice that, ... up
    to `max_backoff` seconds (each varied by ±`jitter` of itself), or what a 429/503's
    `Retry-After` asks; an answer asking for more than `max_retry_after` seconds is not
    waited for (the error is raised)."""

    max_attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 500, 502, 503, 504}))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("backoff, max_backoff and max_retry_after must not be negative")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def retry_after_status(
        self, response: httpx.Response, attempt: int, idempotent: bool
    ) -> float | None:
        """Seconds to wait before resending after this answer, or None: do not resend."""
        status = response.status_code
        if attempt >= self.max_attempts or status not in self.statuses:
            return None
        # A 429 was refused before anything was done; other statuses only for calls that are
        # safe to repeat.
        if status != 429 and not idempotent:
            return None
        hint = parse_retry_after(response.headers.get("retry-after"))
        if hint is not None:
            return hint if hint <= self.max_retry_after else None
        return self.backoff_for(attempt)

    def retry_after_error(
        self, error: httpx.TransportError, attempt: int, idempotent: bool
    ) -> float | None:
        """Seconds to wait before resending after a connection failure, or None."""
        if attempt >= self.max_attempts:
            return None
        if not idempotent and not isinstance(error, _NOT_SENT):
            return None
        return self.backoff_for(attempt)

    def backoff_for(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


NO_RETRIES = RetryPolicy(max_attempts=1)
