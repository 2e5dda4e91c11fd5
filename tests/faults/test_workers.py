"""Workers dying: SIGKILL at random moments (three times in one batch), SIGTERM mid-send.
`mailer api` + two `mailer worker` on PostgreSQL + Redis, SMTP server of the tests' own;
counted per address at the server and in the database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from mailer.config import Settings, normalize_database_url
from mailer.models import Recipient
from tests.faults.conftest import SettingsMaker
from tests.faults.harness import (
    CountingSmtpServer,
    addresses,
    completion_timeout,
    post_batch,
    recipients_for,
    rng,
    running,
    tally,
    wait_accepted,
    wait_completed,
)
from tests.fixtures.processes import env_for

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]


async def test_sigkill_three_times_in_one_batch(
    fault_settings: SettingsMaker, tmp_path: Path
) -> None:
    total = recipients_for(full=5000, quick=1000)
    emails = addresses(total)
    random = rng("sigkill")
    # One kill in each of three windows of the batch; the server takes 10 ms per message
    # (the whole batch at least 10 s), and replacements start without holding up the next
    # kill, so all three land mid-batch.
    marks = [int(random.uniform(start, start + 0.2) * total) for start in (0.1, 0.35, 0.6)]
    with CountingSmtpServer(delay=0.01) as smtp:
        settings = fault_settings(mail_transport="smtp", smtp_url=smtp.url())
        async with running(env_for(settings), settings.database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            at_kill = []
            for mark in marks:
                await wait_accepted(smtp, mark)
                victim = random.choice(run.cluster.live_workers())
                victim.kill()
                at_kill.append(smtp.accepted())
                run.cluster.start_worker(wait=False)
            await wait_completed(run.http, run.key, batch["id"], timeout=completion_timeout(total))
        figures = await tally(
            "SIGKILL x3",
            batch["id"],
            emails,
            smtp.received(),
            settings.database_url,
            allowed_duplicates=3 * settings.worker_concurrency,
            notes={"killed_at_accepted": at_kill},
        )
    figures.check()
    assert figures.states == {"SENT": total}
    assert at_kill[-1] < total  # every kill came before the batch was done


RECOVERY_BOUND_S = 60.0  # a batch resumes within WORKER_DEAD_AFTER (30 s) of a death


async def test_sigkill_with_default_settings(fault_settings: SettingsMaker, tmp_path: Path) -> None:
    """The recovery settings at their defaults (WORKER_DEAD_AFTER, CLAIM_LEASE,
    RECONCILE_INTERVAL, the queue's lock): one worker killed a third of the way in, the
    batch must complete within RECOVERY_BOUND_S of the kill."""
    total = recipients_for(full=3000, quick=1000)
    emails = addresses(total)
    defaults = {
        name: Settings.model_fields[name].default
        for name in ("worker_dead_after", "claim_lease", "reconcile_interval", "shutdown_timeout")
    }
    with CountingSmtpServer(delay=0.01) as smtp:
        settings = fault_settings(mail_transport="smtp", smtp_url=smtp.url(), **defaults)
        async with running(env_for(settings), settings.database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            await wait_accepted(smtp, int(total * rng("sigkill-default").uniform(0.25, 0.4)))
            victim = rng("sigkill-default-victim").choice(run.cluster.live_workers())
            victim.kill()
            killed_at, at_kill = time.monotonic(), smtp.accepted()
            held = await claims_per_worker(settings.database_url, batch["id"])
            await wait_completed(run.http, run.key, batch["id"], timeout=RECOVERY_BOUND_S)
            completed_in = round(time.monotonic() - killed_at, 1)
        figures = await tally(
            "SIGKILL, default settings",
            batch["id"],
            emails,
            smtp.received(),
            settings.database_url,
            allowed_duplicates=settings.worker_concurrency,  # the victim's sends in flight
            notes={
                "killed_at_accepted": at_kill,
                "completed_after_kill_s": completed_in,
                "claims_held_at_kill": held,
            },
        )
    figures.check()
    assert figures.states == {"SENT": total}
    assert at_kill < total
    # A worker holds only claims it is sending (no group waiting for rate slots).
    assert max(held.values(), default=0) <= settings.worker_concurrency, held


async def claims_per_worker(database_url: str, batch_id: str) -> dict[str, int]:
    """SENDING recipients of the batch per claiming worker."""
    engine = create_async_engine(normalize_database_url(database_url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(Recipient.claimed_by, func.count())
                .where(Recipient.batch_id == batch_id, Recipient.status == "SENDING")
                .group_by(Recipient.claimed_by)
            )
            return {str(by): int(n) for by, n in rows.tuples()}
    finally:
        await engine.dispose()


async def test_sigterm_mid_send(fault_settings: SettingsMaker, tmp_path: Path) -> None:
    total = recipients_for()
    emails = addresses(total)
    with CountingSmtpServer(delay=0.002) as smtp:
        settings = fault_settings(mail_transport="smtp", smtp_url=smtp.url())
        async with running(env_for(settings), settings.database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            await wait_accepted(smtp, total // 3)
            victim = run.cluster.live_workers()[0]
            code, stopped_in = victim.terminate_and_wait(timeout=settings.shutdown_timeout + 10)
            log = victim.log()
            await wait_completed(run.http, run.key, batch["id"], timeout=completion_timeout(total))
        figures = await tally(
            "SIGTERM mid-send",
            batch["id"],
            emails,
            smtp.received(),
            settings.database_url,
            allowed_duplicates=0,  # a graceful stop finishes and records its in-flight sends
            notes={"exit_code": code, "stopped_in_s": stopped_in},
        )
    assert code == 0, log[-3000:]
    assert "worker_stopped" in log
    figures.check()
    assert figures.states == {"SENT": total}
