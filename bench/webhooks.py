"""bench/webhooks: outbound webhooks through ONE worker process (pinned to core 1), on
PostgreSQL + Redis, to a local receiver answering after 20 ms (bench/mock_ses.py /hooks).

    bench/webhooks                      # 100k recipients / email.sent events
    bench/webhooks --events 20000       # a shorter run

Phases, each with a fresh worker:
  email      100k recipients to the mock SES (30 ms), no webhook endpoint: emails/s.
  email+hooks  the same with an endpoint subscribed to email.sent: emails/s side by side
             with the one above, and the webhooks delivered meanwhile.
  hooks      the 100k email.sent deliveries of the phase above made due again (payload
             cleared, so they are composed afresh) and delivered by a worker with no email
             to send: deliveries/s at the receiver, worker CPU ms per delivery. Target:
             >= 3,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Stack,
    batch_body,
    mock_reset,
    mock_stats,
    new_report,
    print_table,
    recipients,
    start_mock_ses,
    write_results,
)

TARGET = 3000.0


async def delivered(stack: Stack) -> int:
    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        n = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE state = 'DELIVERED'")
    finally:
        await conn.close()
    return int(n)


async def wait_delivered(stack: Stack, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await delivered(stack) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"webhooks not delivered in {timeout} s")
        await asyncio.sleep(0.2)


def window(stats: dict[str, Any]) -> float | None:
    if stats["first"] and stats["last"] and stats["last"] > stats["first"]:
        return round(stats["accepted"] / (stats["last"] - stats["first"]), 1)
    return None


async def email_phase(
    stack: Stack, name: str, template_id: str, count: int, env: dict[str, str]
) -> dict[str, Any]:
    worker = stack.start_worker(f"worker-{name}", **env)
    try:
        time.sleep(0.5)
        cpu0 = worker.cpu_seconds()
        body = batch_body(template_id, recipients(count, 0, f"{name}-"))
        out, _ = await stack.post_batch(body)
        t0 = time.perf_counter()
        await stack.wait_completed(out["id"], timeout=max(600.0, count / 100), poll=0.1)
        seconds = time.perf_counter() - t0
        cpu = worker.cpu_seconds() - cpu0
        return {
            "emails": count,
            "seconds": round(seconds, 2),
            "emails_per_s": round(count / seconds, 1),
            "worker_cpu_s_until_completed": round(cpu, 2),
            "worker": worker,
        }
    except BaseException:
        worker.stop()
        raise


async def main_async(args: argparse.Namespace) -> int:
    count = args.events
    stack = Stack("webhooks")
    report = new_report(events=count, concurrency=args.concurrency, phases={})
    env = {
        "WORKER_CONCURRENCY": "512",
        "CHUNK_SIZE": "100",
        "SEND_RATE": "0",
        "WEBHOOK_CONCURRENCY": str(args.concurrency),
        "WEBHOOK_ENDPOINT_CONCURRENCY": str(args.concurrency),
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_POLL_INTERVAL": "0.2",
    }
    stack.env.update(WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_ALLOW_HTTP="true")
    try:
        await stack.create()
        stack.start_api()
        template_id = await stack.create_template()
        ses, ses_url = start_mock_ses(stack, latency=0.03)
        hooks, hooks_url = start_mock_ses(stack, latency=args.latency)
        env.update(MAIL_TRANSPORT="ses", AWS_ENDPOINT_URL=ses_url)

        print(f"phase email: {count:,} recipients, no endpoint ...", flush=True)
        plain = await email_phase(stack, "email", template_id, count, env)
        plain.pop("worker").stop()
        report["phases"]["email"] = plain

        async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers()) as c:
            r = await c.post(
                "/api/v1/webhook-endpoints",
                json={"url": f"{hooks_url}/hooks", "events": ["email.sent"]},
            )
            r.raise_for_status()
        print(f"phase email+hooks: {count:,} recipients, endpoint on email.sent ...", flush=True)
        mock_reset(hooks_url)
        both = await email_phase(stack, "email-hooks", template_id, count, env)
        worker = both.pop("worker")
        try:
            t0 = time.perf_counter()
            await wait_delivered(stack, count, timeout=max(600.0, count / 100))
            both["hooks_done_after_completed_s"] = round(time.perf_counter() - t0, 2)
        finally:
            worker.stop()
        stats = mock_stats(hooks_url)
        both["hooks_receiver_per_s"] = window(stats)
        both["hooks_duplicates"] = stats["duplicates"]
        both["hooks_unique"] = stats["unique_recipients"]
        report["phases"]["email+hooks"] = both

        print(f"phase hooks: {count:,} email.sent deliveries made due again ...", flush=True)
        conn = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:
            await conn.execute(
                "UPDATE webhook_deliveries SET state = 'PENDING', attempts = 0, payload = NULL,"
                " next_attempt_at = now(), leased_until = NULL"
            )
            await conn.execute("VACUUM ANALYZE webhook_deliveries")
        finally:
            await conn.close()
        mock_reset(hooks_url)
        worker = stack.start_worker("worker-hooks", **env)
        try:
            cpu0 = worker.cpu_seconds()
            t0 = time.perf_counter()
            await wait_delivered(stack, count, timeout=max(600.0, count / 100))
            seconds = time.perf_counter() - t0
            cpu = worker.cpu_seconds() - cpu0
        finally:
            worker.stop()
        stats = mock_stats(hooks_url)
        report["phases"]["hooks"] = {
            "deliveries": count,
            "seconds_until_all_recorded": round(seconds, 2),
            "deliveries_per_s_recorded": round(count / seconds, 1),
            "receiver_per_s": window(stats),
            "receiver_busiest_second": stats["busiest_second"],
            "worker_cpu_ms_per_delivery": round(cpu * 1000 / count, 4),
            "duplicates": stats["duplicates"],
            "unique": stats["unique_recipients"],
        }
        ses.stop()
        hooks.stop()
    finally:
        await stack.drop()

    p = report["phases"]
    hooks_rate = p["hooks"]["deliveries_per_s_recorded"]
    rows = [
        ("emails/s, no webhooks", p["email"]["emails_per_s"], "", None),
        ("emails/s, webhooks on email.sent", p["email+hooks"]["emails_per_s"], "", None),
        (
            "ratio (with/without)",
            round(p["email+hooks"]["emails_per_s"] / p["email"]["emails_per_s"], 3),
            "",
            None,
        ),
        (
            "webhooks/s at the receiver meanwhile",
            p["email+hooks"]["hooks_receiver_per_s"],
            "",
            None,
        ),
        (
            "webhooks only: deliveries/s (all recorded)",
            hooks_rate,
            f">= {TARGET:,.0f}",
            hooks_rate >= TARGET,
        ),
        ("webhooks only: receiver window /s", p["hooks"]["receiver_per_s"], "", None),
        ("worker CPU ms per delivery", p["hooks"]["worker_cpu_ms_per_delivery"], "", None),
        (
            "duplicates at the receiver",
            p["hooks"]["duplicates"],
            "0",
            p["hooks"]["duplicates"] == 0,
        ),
    ]
    print_table(
        f"bench/webhooks: {count:,} email.sent events, receiver latency "
        f"{args.latency * 1000:.0f} ms, WEBHOOK_CONCURRENCY {args.concurrency}",
        rows,
    )
    write_results(args.output, report)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="outbound webhooks benchmark (one worker)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.02, help="receiver latency, s")
    parser.add_argument("--concurrency", type=int, default=256, help="WEBHOOK_CONCURRENCY")
    parser.add_argument("--output", default="webhooks")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
