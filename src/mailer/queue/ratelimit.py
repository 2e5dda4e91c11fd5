"""Global send-rate limiting, per message (not per job). See limiter implementations below."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class RateLimiter(Protocol):
    async def acquire(self) -> float:
        """Wait until one message may be sent; return seconds waited."""

    def late(self, since: float) -> bool:
        """Whether a send whose slot came at `since` (the loop's clock) is now too late to
        go on that slot: it must take a new one rather than bunch up with later sends."""

    async def set_rate(self, rate: float | None) -> None:
        """Change the rate (messages/s); None or <= 0 means unlimited."""

    async def close(self) -> None: ...
