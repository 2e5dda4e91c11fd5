"""OutageLog: a repeating task's failure is logged when it starts and when it ends, not on
every tick in between."""

from __future__ import annotations

import structlog

from mailer.logging import OutageLog
from tests.fixtures.logs import captured_logs


def test_one_line_per_outage_and_one_per_recovery() -> None:
    outage = OutageLog(structlog.get_logger("test"), "probe")
    with captured_logs() as logs:
        outage.succeeded()  # working from the start: nothing to say
        for _ in range(5):
            outage.failed(ConnectionRefusedError("database away"))
        outage.succeeded()
        outage.succeeded()
        outage.failed(TimeoutError())
        outage.succeeded()
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("probe_failed", "warning"),
        ("probe_recovered", "info"),
        ("probe_failed", "warning"),
        ("probe_recovered", "info"),
    ]
    assert logs[0]["error"] == "ConnectionRefusedError"
    assert logs[0]["detail"] == "database away"
