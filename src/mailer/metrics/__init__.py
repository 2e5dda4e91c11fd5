"""Metrics: Prometheus instruments and exposition, the JSON summaries, worker heartbeats."""

from mailer.metrics.prometheus import MetricsRegistry, get_metrics, worker_window
from mailer.metrics.summary import (
    default_worker_id,
    forget_worker,
    heartbeat,
    worker_heartbeat,
    workers_alive,
)

__all__ = [
    "MetricsRegistry",
    "default_worker_id",
    "forget_worker",
    "get_metrics",
    "heartbeat",
    "worker_heartbeat",
    "worker_window",
    "workers_alive",
]
