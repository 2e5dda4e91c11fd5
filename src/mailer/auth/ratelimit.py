"""Per-key request rate limit (token bucket, per process): API_RATE_LIMIT requests/minute."""

from __future__ import annotations

import math
import time


class KeyRateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key_id: str) -> int | None:
        """None if allowed (and consumes a token), else seconds to wait."""
        if self.capacity <= 0:
            return None
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key_id, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - stamp) * self.refill)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return None
        self._buckets[key_id] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.refill))
