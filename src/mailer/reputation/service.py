"""Reputation guard.

SES reviews an account at a 5 % bounce rate or 0.1 % complaint rate and may pause it at
10 % / 0.5 %. mailer watches the same rates itself — over the last 24 hours and per batch —
and pauses bulk sending (batches with unsubscribe links; transactional batches sent with
`"unsubscribe": false` keep going) before SES does. The pause is a row in `system_state`,
so every worker and API process sees it; only an admin resumes (`mailer sending resume`,
`POST /api/v1/admin/sending/resume`). After a resume only newer sends are judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.config import Settings
from mailer.models.base import utcnow
from mailer.models.enums import MetricKind
from mailer.reputation import repository
from mailer.webhook_endpoints import catalog, outbox

log = structlog.get_logger("mailer.reputation")

STATE_KEY = "sending_paused"
WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class PauseState:
    paused: bool
    reason: str | None = None
    since: datetime | None = None
    resumed_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            "resumedAt": self.resumed_at.isoformat() if self.resumed_at else None,
        }


@dataclass(frozen=True, slots=True)
class Rates:
    sent: int
    bounced: int
    complained: int

    @property
    def bounce_rate(self) -> float | None:
        return self.bounced / self.sent if self.sent else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complained / self.sent if self.sent else None


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


async def current(session: AsyncSession) -> PauseState:
    value = await repository.read_state(session, STATE_KEY)
    if value is None:
        return PauseState(paused=False)
    return PauseState(
        paused=bool(value.get("paused")),
        reason=value.get("reason"),
        since=_parse_time(value.get("since")),
        resumed_at=_parse_time(value.get("resumedAt")),
    )


async def _write(session: AsyncSession, state: PauseState, extra: dict[str, Any]) -> None:
    await repository.write_state(session, STATE_KEY, {**state.as_dict(), **extra})


async def pause(session: AsyncSession, reason: str, *, by: str = "reputation-guard") -> PauseState:
    before = await current(session)
    if before.paused:
        return before
    state = PauseState(paused=True, reason=reason, since=utcnow(), resumed_at=before.resumed_at)
    await _write(session, state, {"by": by})
    await outbox.add_event(session, catalog.SENDING_PAUSED, {"reason": reason, "by": by})
    log.error("sending_paused", reason=reason, by=by)
    return state


async def resume(session: AsyncSession, *, by: str) -> PauseState:
    state = PauseState(paused=False, reason=None, since=None, resumed_at=utcnow())
    await _write(session, state, {"by": by})
    await outbox.add_event(session, catalog.SENDING_RESUMED, {"by": by})
    log.warning("sending_resumed", by=by)
    return state


async def window_rates(session: AsyncSession, since: datetime) -> Rates:
    totals = await repository.metric_counts_since(
        session, since, [MetricKind.SENT, MetricKind.BOUNCED, MetricKind.COMPLAINED]
    )
    return Rates(
        sent=totals.get(MetricKind.SENT, 0),
        bounced=totals.get(MetricKind.BOUNCED, 0),
        complained=totals.get(MetricKind.COMPLAINED, 0),
    )


def _breach(rates: Rates, settings: Settings, where: str) -> str | None:
    if rates.sent < settings.reputation_min_sends:
        return None
    bounce, complaint = rates.bounce_rate or 0.0, rates.complaint_rate or 0.0
    if bounce >= settings.bounce_rate_threshold:
        return (
            f"{where} bounce rate {bounce:.2%} ({rates.bounced}/{rates.sent}) reached "
            f"BOUNCE_RATE_THRESHOLD {settings.bounce_rate_threshold:.2%}"
        )
    if complaint >= settings.complaint_rate_threshold:
        return (
            f"{where} complaint rate {complaint:.3%} ({rates.complained}/{rates.sent}) reached "
            f"COMPLAINT_RATE_THRESHOLD {settings.complaint_rate_threshold:.3%}"
        )
    return None


async def evaluate(session: AsyncSession, settings: Settings) -> PauseState:
    """Check the rolling 24 h rates and the rates of recent batches; pause on a breach."""
    state = await current(session)
    if state.paused:
        return state
    now = utcnow()
    since = max(now - WINDOW, state.resumed_at) if state.resumed_at else now - WINDOW
    reason = _breach(await window_rates(session, since), settings, "24-hour")
    if reason is None:
        batches = await repository.batch_rates_since(session, since, settings.reputation_min_sends)
        for batch_id, sent, bounced, complained in batches:
            reason = _breach(Rates(sent, bounced, complained), settings, f"batch {batch_id}")
            if reason:
                break
    if reason is None:
        return state
    return await pause(session, reason)
