"""The SES account's sending quota for the overview, read at most once a minute per process
(GetAccount is rate limited and a page view should not wait on AWS every time)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from mailer.config import Settings
from mailer.domains.ses_identity import SesIdentityError, ses_client

TTL_SECONDS = 60.0
TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class SesQuota:
    max_24_hour_send: float | None = None
    max_send_rate: float | None = None
    sent_last_24_hours: float | None = None
    sending_enabled: bool | None = None
    production_access: bool | None = None
    error: str | None = None


class SesQuotaCache:
    def __init__(self) -> None:
        self._latest: SesQuota | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, settings: Settings) -> SesQuota:
        async with self._lock:
            if self._latest is None or time.monotonic() - self._read_at >= TTL_SECONDS:
                self._latest = await _read(settings)
                self._read_at = time.monotonic()
            return self._latest


async def _read(settings: Settings) -> SesQuota:
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS), ses_client(settings, attempts=1) as client:
            account = await client.get_account()
    except (SesIdentityError, TimeoutError) as exc:
        return SesQuota(error=str(exc) or "SES did not answer in time")
    quota = account.get("SendQuota", {})
    return SesQuota(
        max_24_hour_send=quota.get("Max24HourSend"),
        max_send_rate=quota.get("MaxSendRate"),
        sent_last_24_hours=quota.get("SentLast24Hours"),
        sending_enabled=account.get("SendingEnabled"),
        production_access=account.get("ProductionAccessEnabled"),
    )
