"""structlog setup: JSON lines in production, coloured console in development.

Context (request_id, batch_id, job_id, recipient_id) is bound with contextvars so every
line logged while handling a request or a job carries it. Secrets never reach the logs:
values are never logged wholesale, and `redact` scrubs anything that looks like a key.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import sys
from typing import Any

import structlog

from mailer.config import LogFormat, Settings

_HEX_KEY = re.compile(r"\b[0-9a-f]{64}\b")


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str) and _HEX_KEY.search(value):
            event_dict[key] = _HEX_KEY.sub("[redacted]", value)
    return event_dict


class _StderrLogger:
    """Writes each line to the current sys.stderr. A log line that cannot be written (a
    closed or broken stream) is dropped: logging must never break sending."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(ValueError, OSError):
            print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _logger_factory(*_: Any) -> _StderrLogger:
    return _STDERR


_STDERR = _StderrLogger()


def _exception_formatter() -> Any:
    """Tracebacks without local variables: rendering them (a request's whole body, nested
    a thousand levels deep) blocked the event loop for minutes and took gigabytes."""
    if importlib.util.find_spec("rich") is None:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any
    if settings.effective_log_format is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=_exception_formatter()
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_logger_factory,
        cache_logger_on_first_use=False,
    )
    # Standard-library loggers (uvicorn, alembic, bullmq) go to stderr at WARNING+.
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, force=True)
    logging.getLogger("uvicorn.access").disabled = True


class OutageLog:
    """For a task that repeats (a heartbeat, a refresh): its failure is logged once when it
    starts failing and once when it works again, not on every tick of the outage."""

    def __init__(self, logger: Any, event: str) -> None:
        self._log = logger
        self._event = event
        self.failing = False

    def failed(self, exc: BaseException) -> None:
        if not self.failing:
            self.failing = True
            self._log.warning(f"{self._event}_failed", error=type(exc).__name__, detail=str(exc))

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            self._log.info(f"{self._event}_recovered")
