"""One HTTP attempt of a webhook: signed POST over a pooled keep-alive connection.

Redirects are never followed, at most RESPONSE_LIMIT bytes of the answer are read, the
whole attempt is bounded by WEBHOOK_TIMEOUT, and unless WEBHOOK_ALLOW_PRIVATE is set the
SSRF guard applies at connect time (`ssrf.guarded_addresses`; IP literals checked here).

The POSTs go through `transports/http1.py`'s raw keep-alive pool (one per endpoint URL),
not aiohttp: measured with `bench/webhooks`, aiohttp's per-request work was most of the
worker's CPU per delivery (see docs/performance.md, "Outbound webhooks").
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from mailer.models.base import utcnow
from mailer.transports.http1 import HttpPool
from mailer.webhook_endpoints import signing, ssrf

RESPONSE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Attempt:
    status_code: int | None
    error: str | None
    latency_ms: int
    response: str | None
    retry_after: float | None = None  # seconds, from a 429/503's Retry-After

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - utcnow()).total_seconds())


USER_AGENT = "mailer-webhooks/1"


class Sender:
    """Keep-alive pools (one per endpoint URL, each up to `limit` connections) for
    attempts. A pool unused for `POOL_IDLE` seconds is dropped when a new one is made."""

    POOL_IDLE = 300.0

    def __init__(self, *, timeout: float, allow_private: bool, limit: int) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self.limit = limit
        self._pools: dict[str, HttpPool] = {}
        self._ssl: ssl.SSLContext | None = None

    def _pool(self, url: str) -> HttpPool:
        pool = self._pools.get(url)
        if pool is None:
            self._drop_idle_pools()
            if self._ssl is None and url.startswith("https:"):
                self._ssl = ssl.create_default_context()  # the system's trusted CAs
            pool = self._pools[url] = HttpPool(
                url,
                self.limit,
                connect_timeout=self.timeout,
                read_timeout=self.timeout,
                ssl_context=self._ssl,
                resolve=None if self.allow_private else ssrf.guarded_addresses,
                body_limit=RESPONSE_LIMIT,
            )
        return pool

    def _drop_idle_pools(self) -> None:
        unused_since = time.monotonic() - max(self.POOL_IDLE, 2 * self.timeout)
        for url, pool in list(self._pools.items()):
            if pool.last_used < unused_since:
                pool.close()
                del self._pools[url]

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    async def send(self, url: str, secrets: Sequence[str], msg_id: str, body: str) -> Attempt:
        started = time.perf_counter()

        def elapsed() -> int:
            return round((time.perf_counter() - started) * 1000)

        if not self.allow_private:
            reason = ssrf.refused_literal(urlsplit(url).hostname or "")
            if reason:
                return Attempt(None, f"refused by the SSRF guard: {reason}", 0, None)
        headers = signing.headers(secrets, msg_id, int(time.time()), body)
        headers["user-agent"] = USER_AGENT
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._pool(url).post(headers, body.encode())
        except TimeoutError:
            return Attempt(None, f"timed out after {self.timeout:g} s", elapsed(), None)
        except (OSError, ValueError) as exc:  # ValueError: a URL that cannot be connected to
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:500], elapsed(), None)
        status = response.status
        retry_after = None
        if status in (429, 503):
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
        text = response.body.decode("utf-8", "replace")
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return Attempt(status, error, elapsed(), text, retry_after)
