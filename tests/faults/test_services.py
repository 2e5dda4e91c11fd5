"""The services under mailer failing mid-batch: Redis restarted (it keeps nothing), Redis
emptied (FLUSHALL / FLUSHDB), PostgreSQL stopped and started. mailer's processes are never
restarted: they must notice, wait and carry on by themselves.

These restart shared servers: with the machine's servers only when CI is set or
MAILER_FAULTS=full (see harness.services_mode); otherwise on private instances."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.config import Settings
from tests.faults.conftest import SettingsMaker
from tests.faults.harness import (
    CountingSmtpServer,
    PostgresService,
    RedisService,
    Running,
    addresses,
    bearer,
    completion_timeout,
    post_batch,
    recipients_for,
    running,
    tally,
    wait_accepted,
    wait_completed,
)
from tests.fixtures.processes import env_for

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]


def redis_settings(
    make: SettingsMaker, service: RedisService, smtp: CountingSmtpServer, **extra: Any
) -> Settings:
    values: dict[str, Any] = {"mail_transport": "smtp", "smtp_url": smtp.url(), **extra}
    if service.mode == "private":
        values["redis_url"] = f"{service.base_url}/0"
    return make(**values)


async def status_of(http: httpx.AsyncClient, path: str, **kwargs: Any) -> int:
    try:
        response = await http.request(kwargs.pop("method", "GET"), path, timeout=15, **kwargs)
    except httpx.HTTPError as exc:
        raise AssertionError(f"{path}: no answer while a service was down ({exc!r})") from exc
    return response.status_code


def alive(run: Running) -> list[int]:
    """PIDs of mailer processes that exited (must stay empty: nothing restarted them)."""
    processes = [*run.cluster.workers, run.cluster.api]
    return [p.pid for p in processes if p is not None and p.proc.poll() is not None]


async def test_redis_restarted_mid_batch(
    fault_settings: SettingsMaker, redis_service: RedisService, tmp_path: Path
) -> None:
    total = recipients_for()
    emails = addresses(total)
    with CountingSmtpServer(delay=0.002) as smtp:
        settings = redis_settings(fault_settings, redis_service, smtp)
        async with running(env_for(settings), settings.database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            await wait_accepted(smtp, total // 3)
            with redis_service.down():
                ready_down = await status_of(run.http, "/api/v1/ready")
                await asyncio.sleep(2)
            await wait_completed(run.http, run.key, batch["id"], timeout=completion_timeout(total))
            ready_after = await status_of(run.http, "/api/v1/ready")
            exited = alive(run)
        figures = await tally(
            "Redis restarted",
            batch["id"],
            emails,
            smtp.received(),
            settings.database_url,
            # Jobs vanish with Redis; their chunks' claims stay in the database: nothing is
            # sent twice unless a worker also lost its place mid-send.
            allowed_duplicates=2 * settings.worker_concurrency,
            notes={"servers": redis_service.mode, "ready_while_down": ready_down},
        )
    figures.check()
    assert figures.states == {"SENT": total}
    assert ready_down == 503 and ready_after == 200
    assert exited == []


async def test_redis_emptied_mid_batch(
    fault_settings: SettingsMaker, redis_service: RedisService, tmp_path: Path
) -> None:
    total = recipients_for()
    emails = addresses(total)
    with CountingSmtpServer(delay=0.002) as smtp:
        settings = redis_settings(fault_settings, redis_service, smtp)
        assert settings.redis_url is not None
        async with running(env_for(settings), settings.database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            await wait_accepted(smtp, total // 3)
            how = redis_service.empty(settings.redis_url)
            await wait_completed(run.http, run.key, batch["id"], timeout=completion_timeout(total))
            exited = alive(run)
        figures = await tally(
            f"Redis emptied ({how})",
            batch["id"],
            emails,
            smtp.received(),
            settings.database_url,
            allowed_duplicates=2 * settings.worker_concurrency,
            notes={"servers": redis_service.mode},
        )
    figures.check()
    assert figures.states == {"SENT": total}
    assert exited == []


async def test_postgres_restarted_mid_batch(
    fault_settings: SettingsMaker, pg_service: tuple[PostgresService, str], tmp_path: Path
) -> None:
    service, database_url = pg_service
    total = recipients_for()
    emails = addresses(total)
    with CountingSmtpServer(delay=0.002) as smtp:
        settings = fault_settings(
            mail_transport="smtp", smtp_url=smtp.url(), database_url=database_url
        )
        async with running(env_for(settings), database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            await wait_accepted(smtp, total // 3)
            with service.down():
                accepted_at_stop = smtp.accepted()
                ready_down = await status_of(run.http, "/api/v1/ready")
                read_down = await status_of(
                    run.http, f"/api/v1/batches/{batch['id']}", headers=bearer(run.key)
                )
                await asyncio.sleep(3)
            await wait_completed(run.http, run.key, batch["id"], timeout=completion_timeout(total))
            ready_after = await status_of(run.http, "/api/v1/ready")
            exited = alive(run)
        figures = await tally(
            "PostgreSQL restarted",
            batch["id"],
            emails,
            smtp.received(),
            database_url,
            # Sends in flight when the database went away are recorded once it is back
            # (the recorder retries); those whose claim expired meanwhile may go twice.
            allowed_duplicates=2 * settings.worker_concurrency,
            notes={
                "servers": service.mode,
                "ready_while_down": ready_down,
                "read_while_down": read_down,
                "accepted_at_stop": accepted_at_stop,
            },
        )
    figures.check()
    assert figures.states == {"SENT": total}
    assert ready_down == 503 and read_down == 503
    assert ready_after == 200
    assert exited == []
