"""bench/deliver: recipients through ONE worker process (pinned to core 1) to the mock SES
(30 ms and 130 ms latency) and to postfix's smtp-sink, on PostgreSQL + Redis.

    bench/deliver                       # 100k recipients: ses30, ses130, smtp
    bench/deliver --phases ses30 --recipients 1000000   # the 1M run (about 10 min)
    bench/deliver --smoke               # CI: 10k via ses30, every recipient SENT, exit 1 if not

Figures per phase: emails/s (batch answered → COMPLETED), worker CPU ms per email, worker
peak RSS, Redis used_memory growth; and the limit in the same run: a bare aiohttp client
driving the same mock at the same concurrency, or smtp-source into the same smtp-sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    PYTHON,
    WORKER_CPU,
    Sampler,
    Stack,
    batch_body,
    mb,
    mock_reset,
    mock_stats,
    new_report,
    print_table,
    recipients,
    smtp_sink_path,
    start_mock_ses,
    start_smtp_sink,
    stop_postfix_daemon,
    write_results,
)

DEFAULT_CONCURRENCY = 512
MAX_PER_POST = 100_000


async def post_recipients(stack: Stack, template_id: str, count: int, prefix: str) -> list[str]:
    """The batch(es) for `count` recipients: one batch up to MAX_BATCH_RECIPIENTS."""
    limit = int(stack.env["MAX_BATCH_RECIPIENTS"])
    ids = []
    for start in range(0, count, limit):
        n = min(limit, count - start)
        body = batch_body(template_id, recipients(n, start, prefix))
        out, _ = await stack.post_batch(body)
        ids.append(out["id"])
    return ids


async def run_phase(
    stack: Stack,
    name: str,
    template_id: str,
    count: int,
    worker_env: dict[str, str],
    *,
    mock_url: str | None,
) -> dict[str, Any]:
    worker = stack.start_worker(f"worker-{name}", **worker_env)
    client = stack.redis()
    try:
        if mock_url:
            mock_reset(mock_url)
        time.sleep(0.5)
        cpu0 = worker.cpu_seconds()
        db0 = await stack.backend_cpu()
        with Sampler({"worker": worker}, client) as sampler:
            t0 = time.perf_counter()
            ids = await post_recipients(stack, template_id, count, prefix=f"{name}-")
            t_posted = time.perf_counter()
            for batch_id in ids:
                await stack.wait_completed(batch_id, timeout=max(600.0, count / 200), poll=0.1)
            t_done = time.perf_counter()
        cpu = worker.cpu_seconds() - cpu0
        db1 = await stack.backend_cpu()
        db_cpu = sum(t - db0.get(pid, 0.0) for pid, t in db1.items())
        counts: dict[str, int] = {}
        for batch_id in ids:
            for k, v in (await stack.status_counts(batch_id)).items():
                counts[k] = counts.get(k, 0) + v
    finally:
        worker.stop()
    seconds = t_done - t_posted if len(ids) == 1 else t_done - t0
    result: dict[str, Any] = {
        "recipients": count,
        "batches": len(ids),
        "seconds": round(seconds, 2),
        "emails_per_s": round(count / seconds, 1),
        "worker_cpu_ms_per_email": round(cpu * 1000 / count, 4),
        "worker_cpu_s": round(cpu, 2),
        "db_cpu_ms_per_email": round(db_cpu * 1000 / count, 4),
        "worker_peak_rss_mb": mb(sampler.peak_rss["worker"]),
        "worker_start_rss_mb": mb(sampler.start_rss["worker"]),
        "redis_used_memory_start_mb": mb(sampler.redis_start),
        "redis_used_memory_growth_mb": mb(sampler.redis_peak - sampler.redis_start),
        "statuses": counts,
        "all_sent": counts.get("SENT", 0) == count,
        "worker_env": worker_env,
    }
    if mock_url:
        stats = mock_stats(mock_url)
        stats.pop("per_second", None)
        if stats["first"] and stats["last"] and stats["last"] > stats["first"]:
            result["mock_window_emails_per_s"] = round(
                stats["accepted"] / (stats["last"] - stats["first"]), 1
            )
        result["mock"] = stats
    return result


def bare_client(mock_url: str, count: int, concurrency: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(WORKER_CPU),
            PYTHON,
            str(BENCH / "bare_client.py"),
            "--url",
            mock_url,
            "--count",
            str(count),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def smtp_source(port: int, count: int, sessions: int, size: int) -> dict[str, Any]:
    source = smtp_sink_path().replace("smtp-sink", "smtp-source")
    args = [
        "taskset",
        "-c",
        str(WORKER_CPU),
        source,
        "-d",  # keep the session open: many messages per connection, like the worker
        "-s",
        str(sessions),
        "-m",
        str(count),
        "-l",
        str(size),
        "-f",
        "bench@example.com",
        "-t",
        "sink@example.com",
        f"127.0.0.1:{port}",
    ]
    t0 = time.perf_counter()
    subprocess.run(args, capture_output=True, check=True)
    seconds = time.perf_counter() - t0
    return {
        "sent": count,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds, 1),
        "sessions": sessions,
        "message_bytes": size,
    }


async def main_async(args: argparse.Namespace) -> int:
    phases = ["ses30"] if args.smoke else args.phases.split(",")
    count = 10_000 if args.smoke else args.recipients
    stack = Stack("deliver")
    report = new_report(
        recipients=count,
        concurrency=args.concurrency,
        chunk_size=args.chunk_size,
        phases={},
    )
    if count > MAX_PER_POST:
        stack.env["MAX_BATCH_RECIPIENTS"] = str(count)
        stack.env["MAX_BODY_BYTES"] = str(1 << 30)
    ok = True
    try:
        await stack.create()
        if args.sql:
            conn = await asyncpg.connect(stack.env["DATABASE_URL"])
            try:
                for statement in args.sql:
                    await conn.execute(statement)
            finally:
                await conn.close()
        stack.start_api()
        template_id = await stack.create_template()
        base_env = {
            "WORKER_CONCURRENCY": str(args.concurrency),
            "CHUNK_SIZE": str(args.chunk_size),
            "SEND_RATE": "0",
            "DB_POOL_SIZE": "10",
        }
        for phase in phases:
            print(f"phase {phase}: {count:,} recipients ...", flush=True)
            if phase.startswith("ses"):
                latency = int(phase[3:]) / 1000
                mock, url = start_mock_ses(stack, latency=latency)
                try:
                    env = {**base_env, "MAIL_TRANSPORT": "ses", "AWS_ENDPOINT_URL": url}
                    result = await run_phase(stack, phase, template_id, count, env, mock_url=url)
                    if not args.smoke and not args.no_limit:
                        mock_reset(url)
                        result["limit_bare_client"] = bare_client(url, count, args.concurrency)
                        result["ratio_to_limit"] = round(
                            result["emails_per_s"] / result["limit_bare_client"]["per_second"], 3
                        )
                finally:
                    mock.stop()
                dup = result["mock"]["duplicates"]
                ok = ok and result["all_sent"] and dup == 0
            elif phase == "smtp":
                sink, port = start_smtp_sink(stack)
                try:
                    env = {
                        **base_env,
                        "MAIL_TRANSPORT": "smtp",
                        "SMTP_URL": f"smtp://127.0.0.1:{port}",
                    }
                    result = await run_phase(stack, phase, template_id, count, env, mock_url=None)
                    if not args.no_limit:
                        result["limit_smtp_source"] = smtp_source(
                            port, count, min(args.concurrency, 100), 4096
                        )
                        result["ratio_to_limit"] = round(
                            result["emails_per_s"] / result["limit_smtp_source"]["per_second"], 3
                        )
                finally:
                    sink.stop()
                    stop_postfix_daemon()
                ok = ok and result["all_sent"]
            else:
                raise SystemExit(f"unknown phase {phase!r}")
            report["phases"][phase] = result
    finally:
        await stack.drop()

    rows = []
    for phase, r in report["phases"].items():
        target = 1000 if phase == "smtp" else 2000 if phase == "ses30" else None
        rows.append(
            (
                f"{phase} emails/s",
                r["emails_per_s"],
                f">= {target:,}" if target else "",
                r["emails_per_s"] >= target if target else None,
            )
        )
        if "ratio_to_limit" in r:
            lim = r.get("limit_bare_client") or r.get("limit_smtp_source")
            rows.append((f"{phase} limit (bare client/smtp-source)/s", lim["per_second"], "", None))
            rows.append((f"{phase} ratio to limit", r["ratio_to_limit"], "", None))
        rows.append(
            (
                f"{phase} worker CPU ms/email",
                r["worker_cpu_ms_per_email"],
                "<= 0.5",
                r["worker_cpu_ms_per_email"] <= 0.5,
            )
        )
        rows.append(
            (
                f"{phase} PostgreSQL CPU ms/email (its backends)",
                r["db_cpu_ms_per_email"],
                "",
                None,
            )
        )
        rows.append(
            (
                f"{phase} worker peak RSS MB",
                r["worker_peak_rss_mb"],
                "<= 150",
                r["worker_peak_rss_mb"] <= 150,
            )
        )
        rows.append(
            (
                f"{phase} Redis growth MB",
                r["redis_used_memory_growth_mb"],
                "<= 50",
                r["redis_used_memory_growth_mb"] <= 50,
            )
        )
        rows.append((f"{phase} all SENT", str(r["all_sent"]), "", r["all_sent"]))
    print_table(f"bench/deliver: {count:,} recipients, concurrency {args.concurrency}", rows)
    write_results("deliver-smoke" if args.smoke else args.output, report)
    if args.smoke:
        print("smoke:", "OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description="delivery benchmark (one worker)")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--phases", default="ses30,ses130,smtp")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--no-limit", action="store_true", help="skip the limit measurements")
    parser.add_argument(
        "--smoke", action="store_true", help="10k via ses30; exit 1 unless all SENT"
    )
    parser.add_argument("--output", default="deliver")
    parser.add_argument(
        "--sql",
        action="append",
        default=[],
        help="a statement run on the migrated bench database first (repeatable), e.g. "
        "'DROP INDEX ix_recipients_rare_status_id' to measure the write cost of an index",
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
