from __future__ import annotations

from datetime import datetime

from pydantic import Field

from mailer.schemas import RequestModel, ResponseModel


class SendingState(ResponseModel):
    paused: bool
    reason: str | None
    since: datetime | None
    resumed_at: datetime | None


class PauseRequest(RequestModel):
    reason: str = Field("paused by an admin", min_length=1, max_length=500)
