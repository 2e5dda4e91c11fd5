from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from mailer.schemas import RequestModel, ResponseModel


class DeadLetterOut(ResponseModel):
    id: int
    batch_id: str
    seq_start: int
    seq_end: int
    recipient_count: int
    error: str
    attempts: int
    failed_at: datetime


class RetryRequest(RequestModel):
    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(
        None, max_length=10_000, description="omit to retry all"
    )


class RetryOut(ResponseModel):
    dead_letters: int
    recipients: int
    jobs: int


class PurgeOut(ResponseModel):
    deleted: int
