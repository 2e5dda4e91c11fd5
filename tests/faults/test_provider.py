"""The provider misbehaving: 30 % transient errors, bursts of throttling, permanent
rejections for some addresses, and a slow provider (2 s per send) with SHUTDOWN_TIMEOUT
shorter than a send. SES endpoint of the tests' own; counted per address there and in the
database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailer.config import Settings
from tests.faults.conftest import SettingsMaker
from tests.faults.harness import (
    ScriptedSesServer,
    addresses,
    bearer,
    completion_timeout,
    post_batch,
    recipients_for,
    rng,
    running,
    tally,
    throttling_bursts,
    transient_errors,
    wait_accepted,
    wait_completed,
)
from tests.fixtures.processes import env_for
from tests.fixtures.ses_server import SES_ACCESS_KEY, SES_REGION, SES_SECRET_KEY, SesFailure

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]


def ses_settings(make: SettingsMaker, server: ScriptedSesServer, **extra: Any) -> Settings:
    return make(
        mail_transport="ses",
        aws_endpoint_url=server.url,
        aws_region=SES_REGION,
        aws_access_key_id=SES_ACCESS_KEY,
        aws_secret_access_key=SES_SECRET_KEY,
        **extra,
    )


async def test_thirty_percent_transient_errors(
    fault_settings: SettingsMaker, tmp_path: Path
) -> None:
    """JOB_ATTEMPTS=3: a recipient failing three times in a row (0.3³ ≈ 2.7 %) is dead-
    lettered as FAILED; retrying the dead letters once the provider is healthy sends them."""
    total = recipients_for()
    emails = addresses(total)
    with ScriptedSesServer(latency=0.002) as ses:
        ses.policy = transient_errors(0.3, rng("transient"))
        settings = ses_settings(fault_settings, ses, job_attempts=3)
        async with running(env_for(settings), settings.database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            first = await wait_completed(
                run.http, run.key, batch["id"], timeout=completion_timeout(total)
            )
            dead = (
                await run.http.get("/api/v1/admin/dead-letters", headers=bearer(run.key))
            ).json()
            ses.policy = None
            retried = await run.http.post(
                "/api/v1/admin/dead-letters/retry", headers=bearer(run.key)
            )
            assert retried.status_code == 200, retried.text
            final = await wait_completed(
                run.http, run.key, batch["id"], timeout=completion_timeout(total)
            )
        figures = await tally(
            "30% transient errors",
            batch["id"],
            emails,
            ses.received(),
            settings.database_url,
            notes={
                "answers": dict(ses.answers),
                "failed_after_3_attempts": first["counts"]["FAILED"],
                "dead_letters": dead["total"],
                "sent_after_dlq_retry": final["counts"]["SENT"],
            },
        )
    figures.check()
    assert ses.answers["InternalFailure"] > 0
    assert first["counts"]["FAILED"] == retried.json()["recipients"]
    assert figures.states == {"SENT": total}


async def test_throttling_bursts(fault_settings: SettingsMaker, tmp_path: Path) -> None:
    """Every 1.5 s, 0.5 s of 429s: every worker pauses, no attempt is used, nothing fails."""
    total = recipients_for()
    emails = addresses(total)
    with ScriptedSesServer(latency=0.002) as ses:
        ses.policy = throttling_bursts(every=1.5, length=0.5, retry_after=0.3)
        settings = ses_settings(fault_settings, ses, job_attempts=1)
        async with running(env_for(settings), settings.database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            await wait_completed(run.http, run.key, batch["id"], timeout=completion_timeout(total))
        figures = await tally(
            "throttling bursts",
            batch["id"],
            emails,
            ses.received(),
            settings.database_url,
            notes={"answers": dict(ses.answers), "job_attempts": 1},
        )
    figures.check()
    assert ses.answers["TooManyRequestsException"] > 0
    # JOB_ATTEMPTS=1: had a throttled send used an attempt, its recipient would be FAILED.
    assert figures.states == {"SENT": total}


async def test_permanent_rejections(fault_settings: SettingsMaker, tmp_path: Path) -> None:
    total = recipients_for()
    emails = addresses(total)
    rejected = set(rng("rejected").sample(emails, max(1, total // 50)))
    with ScriptedSesServer(latency=0.002) as ses:
        for address in rejected:
            ses.set_rule(address, SesFailure.rejected("Address blacklisted."))
        settings = ses_settings(fault_settings, ses)
        async with running(env_for(settings), settings.database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            await wait_completed(run.http, run.key, batch["id"], timeout=completion_timeout(total))
        figures = await tally(
            "permanent rejections",
            batch["id"],
            emails,
            ses.received(),
            settings.database_url,
            notes={"rejected_addresses": len(rejected), "answers": dict(ses.answers)},
        )
        attempts = {a: ses.attempts_by_address.get(a, 0) for a in rejected}
    figures.check()
    assert figures.states == {"SENT": total - len(rejected), "FAILED": len(rejected)}
    assert set(attempts.values()) == {1}  # a permanent failure is never retried


async def test_slow_provider_shorter_shutdown_timeout(
    fault_settings: SettingsMaker, tmp_path: Path
) -> None:
    """2 s per send, SHUTDOWN_TIMEOUT=1: a SIGTERMed worker cannot finish its in-flight sends;
    it stops anyway, and those recipients are sent again after their lease (the provider
    may have accepted them: at most WORKER_CONCURRENCY duplicates)."""
    total = recipients_for(full=5000, quick=600)
    emails = addresses(total)
    concurrency = 100
    with ScriptedSesServer(latency=2.0) as ses:
        settings = ses_settings(
            fault_settings, ses, worker_concurrency=concurrency, shutdown_timeout=1.0
        )
        async with running(env_for(settings), settings.database_url, tmp_path) as run:
            batch = await post_batch(run.http, run.key, run.template_id, emails)
            await wait_accepted(ses, total // 4)
            victim = run.cluster.live_workers()[0]
            code, stopped_in = victim.terminate_and_wait(timeout=settings.shutdown_timeout + 10)
            log = victim.log()
            run.cluster.start_worker()
            await wait_completed(
                run.http, run.key, batch["id"], timeout=completion_timeout(total, per_second=20)
            )
        figures = await tally(
            "slow provider, SHUTDOWN_TIMEOUT < send",
            batch["id"],
            emails,
            ses.received(),
            settings.database_url,
            allowed_duplicates=concurrency,
            notes={"exit_code": code, "stopped_in_s": stopped_in, "send_latency_s": 2.0},
        )
    assert code == 0, log[-3000:]
    figures.check()
    assert figures.states == {"SENT": total}
