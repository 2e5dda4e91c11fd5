"""One HTTP attempt of a webhook: signed POST over a pooled keep-alive connection.

Redirects are never followed, at most RESPONSE_LIMIT bytes of the answer are read, the
whole attempt is bounded by WEBHOOK_TIMEOUT, and unless WEBHOOK_ALLOW_PRIVATE is set the
SSRF guard applies at connect time (`ssrf.GuardedResolver`; IP literals checked here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from mailer.models.base import utcnow
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


class Sender:
    """An aiohttp session (a keep-alive pool of up to `limit` connections) for attempts."""

    def __init__(self, *, timeout: float, allow_private: bool, limit: int) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.limit,
                resolver=None if self.allow_private else ssrf.GuardedResolver(),
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
                headers={"user-agent": "mailer-webhooks/1"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, url: str, secrets: Sequence[str], msg_id: str, body: str) -> Attempt:
        started = time.perf_counter()

        def elapsed() -> int:
            return round((time.perf_counter() - started) * 1000)

        if not self.allow_private:
            reason = ssrf.refused_literal(urlsplit(url).hostname or "")
            if reason:
                return Attempt(None, f"refused by the SSRF guard: {reason}", 0, None)
        headers = signing.headers(secrets, msg_id, int(time.time()), body)
        try:
            async with self._client().post(
                url, data=body.encode(), headers=headers, allow_redirects=False
            ) as response:
                content = bytearray()
                while len(content) < RESPONSE_LIMIT:
                    chunk = await response.content.read(RESPONSE_LIMIT - len(content))
                    if not chunk:
                        break
                    content += chunk
                status = response.status
                retry_after = None
                if status in (429, 503):
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            return Attempt(None, f"timed out after {self.timeout:g} s", elapsed(), None)
        except aiohttp.ClientError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:500], elapsed(), None)
        except OSError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:500], elapsed(), None)
        except asyncio.CancelledError:
            raise
        text = bytes(content).decode("utf-8", "replace")
        error = None if 200 <= status < 300 else f"HTTP {status}"
        return Attempt(status, error, elapsed(), text, retry_after)
