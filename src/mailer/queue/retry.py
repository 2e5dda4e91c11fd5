"""Retry backoff for failed jobs, shared by both queue implementations."""

from __future__ import annotations

import random

MAX_RETRY_DELAY_MS = 3_600_000


def retry_delay_ms(base_ms: int, attempts_made: int) -> int:
    """Delay before the next attempt after `attempts_made` failed ones: base * 2^(n-1),
    with "equal jitter" (uniform in [half, full]) so chunks that failed together (a provider
    outage) do not all retry in the same instant. Capped at one hour."""
    if base_ms <= 0 or attempts_made <= 0:
        return 0
    full = min(base_ms << min(attempts_made - 1, 40), MAX_RETRY_DELAY_MS)
    return max(1, round(full / 2 + random.random() * full / 2))
