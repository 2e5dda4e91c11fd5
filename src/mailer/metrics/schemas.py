"""Response bodies of GET /metrics (public summary) and GET /admin/metrics (time series)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from mailer.reputation.schemas import SendingState
from mailer.schemas import ResponseModel


class KindCounts(ResponseModel):
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    complained: int = 0
    delivered: int = 0
    suppressed: int = 0
    retried: int = 0
    unsubscribed: int = 0


class MetricsSummaryOut(ResponseModel):
    """Public: counts only, never addresses or keys."""

    totals: KindCounts = Field(description="all time")
    last_hour: KindCounts = Field(description="the last 60 minutes")
    queue_depth: int | None = Field(description="jobs waiting/delayed/active; null if unknown")
    workers_alive: int = Field(description="workers with a heartbeat within WORKER_DEAD_AFTER")
    batches: dict[str, int] = Field(description="batches by status")
    dead_letters: int
    sending_paused: bool
    uptime_seconds: float = Field(description="since this API process started")
    generated_at: datetime = Field(description="when the numbers were read (cached ~5 s)")


class BucketOut(KindCounts):
    start: datetime


class AdminMetricsOut(ResponseModel):
    hours: int
    granularity: Literal["minute", "hour"]
    start: datetime = Field(description="first bucket's start")
    end: datetime = Field(description="end of the last bucket (exclusive)")
    buckets: list[BucketOut] = Field(description="every bucket, zeros included, oldest first")
    totals: KindCounts
    bounce_rate: float | None = Field(description="bounced / sent; null when nothing was sent")
    complaint_rate: float | None = Field(description="complained / sent; null when sent = 0")
    reputation: SendingState = Field(description="the reputation guard's pause")
