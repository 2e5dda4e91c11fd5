"""Metrics: Prometheus instruments and exposition, the JSON summaries."""

from mailer.metrics.prometheus import MetricsRegistry, get_metrics, worker_window

__all__ = ["MetricsRegistry", "get_metrics", "worker_window"]
