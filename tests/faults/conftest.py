"""Fixtures of the fault suite: scenario settings and the restartable services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.config import Settings
from tests.faults.harness import PostgresService, RedisService, services_mode
from tests.fixtures import database

SettingsMaker = Callable[..., Settings]


@pytest.fixture
def fault_settings(settings_factory: Any) -> SettingsMaker:
    """Settings for a scenario: short liveness bound, lease and reconcile interval so
    recovery after a crash takes seconds; no global send rate; keyword overrides win."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "worker_concurrency": 10,
            "claim_lease": 5.0,
            "worker_dead_after": 5.0,
            "reconcile_interval": 1.0,
            "shutdown_timeout": 5.0,
            "job_backoff_delay": 50,
            "send_rate": 0,
            "log_level": "info",
            **overrides,
        }
        settings: Settings = settings_factory(**values)
        return settings

    return make


def _skip_reason(kind: str, reason: str | None, mode: str) -> str:
    if mode == "private":
        return (
            f"no private {kind} for this restart scenario ({reason}); restarting the machine's "
            f"{kind} would break other test runs: set CI=1 or MAILER_FAULTS=full to use it"
        )
    return f"cannot restart the machine's {kind}: {reason}"


@pytest.fixture
def redis_service(tmp_path: Path) -> Iterator[RedisService]:
    """A Redis the test may restart: the machine's (CI or full runs) or a private one."""
    mode = services_mode()
    reason = RedisService.available(mode)
    if reason is not None:
        pytest.skip(_skip_reason("Redis", reason, mode))
    service = RedisService(mode, tmp_path / "redis")
    if mode == "private":
        service.start()
    try:
        yield service
    finally:
        service.close()


@pytest.fixture
def pg_service(database_url: str) -> Iterator[tuple[PostgresService, str]]:
    """A PostgreSQL the test may stop and start, and the URL of a migrated database on it."""
    mode = services_mode()
    reason = PostgresService.available(mode)
    if reason is not None:
        pytest.skip(_skip_reason("PostgreSQL", reason, mode))
    service = PostgresService(mode)
    try:
        if mode == "machine":
            yield service, database_url
            return
        service.create()
        url = service.url("mailer_faults")
        asyncio.run(_create_database(service.admin_url, "mailer_faults"))
        database.migrate(url)
        yield service, url
    finally:
        service.close()


async def _create_database(admin_url: str, name: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(
        admin_url.replace("postgresql://", "postgresql+asyncpg://"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.faults.harness import MODE, REPORTED

    if REPORTED:
        terminalreporter.section(f"reliability figures (MAILER_FAULTS={MODE})")
        for line in REPORTED:
            terminalreporter.write_line(line)
        REPORTED.clear()  # the hook may be registered twice (tests/load imports it)
