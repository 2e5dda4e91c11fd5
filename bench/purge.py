"""bench/purge: the retention purge deleting old rows while a batch sends. The send rate
the mock SES sees while `mailer purge` runs, against the rate in the same run just before
it started (target: >= 90 %).

    bench/purge                          # 10M old rows (5M recipients + 5M events)
    bench/purge --old-rows 2000000 --recipients 100000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

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

OLD_BATCHES = 100


async def load_old_rows(stack: Stack, rows: int) -> float:
    """OLD_BATCHES batches finished 100 days ago, each with rows/2/OLD_BATCHES recipients
    and as many events. Seconds it took."""
    per_batch = max(1, rows // 2 // OLD_BATCHES)
    started = time.perf_counter()
    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        version = await conn.fetchrow("SELECT id, template_id FROM template_versions LIMIT 1")
        await conn.execute(
            """
            INSERT INTO batches (id, template_id, template_version_id, status, metadata, tags,
                                 reply_to, unsubscribe, total_recipients, duplicate_count,
                                 suppressed_count, sent_count, failed_count, cancelled_count,
                                 delivered_count, bounced_count, complained_count, chunk_size,
                                 created_at, completed_at)
            SELECT 'OLD' || lpad(g::text, 23, '0'), $1, $2, 'COMPLETED', '{}', '{}', '[]',
                   true, $3, 0, 0, $3, 0, 0, 0, 0, 0, 100,
                   now() - interval '101 days', now() - interval '100 days'
            FROM generate_series(1, $4) AS g
            """,
            version["template_id"],
            version["id"],
            per_batch,
            OLD_BATCHES,
        )
        await conn.execute(
            """
            INSERT INTO recipients (batch_id, seq, email, variables, status, attempts,
                                    sent_at, updated_at)
            SELECT b.id, g, 'old' || g || '@example.com', '{}', 'SENT', 1,
                   b.completed_at, b.completed_at
            FROM batches AS b, generate_series(0, $1 - 1) AS g
            WHERE b.id LIKE 'OLD%'
            """,
            per_batch,
        )
        await conn.execute(
            """
            INSERT INTO events (batch_id, email, type, data, created_at)
            SELECT b.id, 'old' || g || '@example.com', 'SENT', '{}', b.completed_at
            FROM batches AS b, generate_series(0, $1 - 1) AS g
            WHERE b.id LIKE 'OLD%'
            """,
            per_batch,
        )
        await conn.execute("VACUUM ANALYZE recipients")
        await conn.execute("VACUUM ANALYZE events")
    finally:
        await conn.close()
    return time.perf_counter() - started


def rate_between(per_second: dict[int, int], start: float, end: float) -> float | None:
    """Sends per second over the whole seconds inside [start, end]."""
    seconds = [s for s in per_second if start <= s and s + 1 <= end]
    if not seconds:
        return None
    return sum(per_second[s] for s in seconds) / len(seconds)


async def run_purge(stack: Stack, duty: float) -> Any:
    """What `mailer purge --older-than 90d --duty D` does, in this process (so the measured
    window is the purge itself, not a process start)."""
    from mailer.config import load_settings
    from mailer.db import create_engine, create_sessionmaker
    from mailer.retention import service

    settings = load_settings(_env_file=None, database_url=stack.env["DATABASE_URL"])
    engine = create_engine(settings, pool_size=2)
    try:
        return await service.purge(create_sessionmaker(engine), service.cutoff_for(90), duty=duty)
    finally:
        await engine.dispose()


async def main_async(args: argparse.Namespace) -> int:
    stack = Stack("purge")
    report = new_report(
        old_rows=args.old_rows,
        recipients=args.recipients,
    )
    try:
        await stack.create()
        mock, url = start_mock_ses(stack, latency=args.latency)
        stack.start_api()
        template_id = await stack.create_template()
        report["load_s"] = round(await load_old_rows(stack, args.old_rows), 1)
        # RETENTION_DAYS=0: the worker's reconciler leaves the old rows to `mailer purge`.
        env = {
            "MAIL_TRANSPORT": "ses",
            "AWS_ENDPOINT_URL": url,
            "SEND_RATE": "0",
            "WORKER_CONCURRENCY": str(args.concurrency),
            "RETENTION_DAYS": "0",
        }
        stack.start_worker("worker", cpu=1, **env)
        mock_reset(url)
        batches = []
        for start in range(0, args.recipients, 100_000):
            rows = recipients(min(100_000, args.recipients - start), start=start)
            out, _ = await stack.post_batch(batch_body(template_id, rows))
            batches.append(out["id"])
        # Sending at its steady rate for the baseline window, then the purge.
        await asyncio.sleep(args.baseline)
        purge_started = time.time()
        purged = await run_purge(stack, args.duty)
        purge_ended = time.time()
        for batch_id in batches:
            await stack.wait_completed(batch_id, timeout=3600)
        stats = mock_stats(url)
        counts = await stack.status_counts()
        mock.stop()
    finally:
        await stack.drop()

    per_second = {int(k): v for k, v in stats.pop("per_second").items()}
    first_send = min(per_second) if per_second else purge_started
    last_send = max(per_second) if per_second else purge_ended
    before = rate_between(per_second, first_send + 2, purge_started)
    during = rate_between(per_second, purge_started, min(purge_ended, last_send))
    after = rate_between(per_second, purge_ended, last_send - 1)
    ratio = round(during / before, 3) if before and during else None
    report.update(
        {
            "purge_s": round(purge_ended - purge_started, 1),
            "purged": {
                "recipients": purged.recipients,
                "events": purged.events,
                "batches": purged.batches,
                "transactions": purged.transactions,
            },
            "rate_after": round(after, 1) if after else None,
            "rate_before": round(before, 1) if before else None,
            "rate_during_purge": round(during, 1) if during else None,
            "ratio": ratio,
            "sending_outlasted_purge": last_send >= purge_ended,
            "per_second": per_second,
            "statuses": counts,
        }
    )
    deleted = purged.recipients + purged.events
    deleted_per_s = deleted / max(report["purge_s"], 0.001)
    rows_table = [
        ("old rows loaded / deleted", f"{args.old_rows:,} / {deleted:,}", "", None),
        ("purge took (s)", report["purge_s"], "", None),
        ("rows deleted per second", round(deleted_per_s), "", None),
        ("sends/s before the purge", report["rate_before"], "", None),
        ("sends/s during the purge", report["rate_during_purge"], "", None),
        ("sends/s after it (control)", report["rate_after"], "", None),
        ("ratio during / before", ratio, ">= 0.9", ratio is not None and ratio >= 0.9),
        ("sending outlasted the purge", str(report["sending_outlasted_purge"]), "", None),
    ]
    print_table(
        f"bench/purge: {args.old_rows:,} old rows while {args.recipients:,} send", rows_table
    )
    write_results(args.output, report)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="retention purge while sending")
    parser.add_argument("--old-rows", type=int, default=10_000_000)
    parser.add_argument("--recipients", type=int, default=300_000)
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds before the purge")
    parser.add_argument("--latency", type=float, default=0.03)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--duty", type=float, default=0.2, help="mailer purge --duty")
    parser.add_argument("--output", default="purge")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
