"""bench/ingest: POST /batches with 10k, 100k and 1M recipients (1M as ten 100k batches)
to a running API on PostgreSQL + Redis; recipients/s accepted durably (201 answered, rows
committed), API peak RSS and its growth; against a plain COPY of the same rows.

    bench/ingest                 # 10k x3, 100k x3, 1M (10 x 100k)
    bench/ingest --sizes 100000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Stack,
    batch_body,
    mb,
    new_report,
    print_table,
    recipients,
    write_results,
)

PER_BATCH = 100_000


async def copy_limit(stack: Stack, template_id: str, count: int, repeat: int) -> dict[str, Any]:
    """The same rows COPYed (records prebuilt, one transaction) into the recipients table
    itself (same indexes, foreign key and size as the API writes into), for a batch made
    through the API with one recipient."""
    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    timings = []
    try:
        for i in range(repeat):
            out, _ = await stack.post_batch(
                batch_body(template_id, recipients(1, prefix=f"copy{i}-"))
            )
            now = dt.datetime.now(dt.UTC)
            records = [
                (
                    out["id"],
                    seq,
                    r["email"],
                    orjson.dumps(r["variables"]).decode(),
                    "PENDING",
                    0,
                    now,
                )
                for seq, r in enumerate(recipients(count, prefix=f"copy{i}-"))
                if seq > 0
            ]
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "recipients",
                    records=records,
                    columns=(
                        "batch_id",
                        "seq",
                        "email",
                        "variables",
                        "status",
                        "attempts",
                        "updated_at",
                    ),
                )
            timings.append(time.perf_counter() - started)
    finally:
        await conn.close()
    best = statistics.median(timings)
    rows = count - 1
    return {
        "rows": rows,
        "seconds_median": round(best, 3),
        "rows_per_s": round(rows / best),
        "all_seconds": [round(t, 3) for t in timings],
    }


async def durable_count(stack: Stack, batch_id: str) -> int:
    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM recipients WHERE batch_id = $1", batch_id)
        )
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> int:
    stack = Stack("ingest")
    report = new_report(runs={})
    try:
        await stack.create()
        api = stack.start_api()
        template_id = await stack.create_template()
        # Warm-up: first request pays imports and statement preparation.
        await stack.post_batch(batch_body(template_id, recipients(1000, prefix="warm")))
        serial = 0
        for size in args.sizes:
            runs = []
            repeat = 1 if size > PER_BATCH else args.repeat
            for _ in range(repeat):
                bodies = []
                for start in range(0, size, PER_BATCH):
                    n = min(PER_BATCH, size - start)
                    bodies.append(
                        batch_body(template_id, recipients(n, start, prefix=f"r{serial}-"))
                    )
                    serial += 1
                rss_before = api.rss()
                peak = rss_before
                total_s = 0.0
                for body in bodies:
                    task = asyncio.create_task(stack.post_batch(body))
                    while not task.done():
                        peak = max(peak, api.rss())
                        await asyncio.sleep(0.02)
                    out, seconds = task.result()
                    total_s += seconds
                    stored = await durable_count(stack, out["id"])
                    if stored != out["recipients"]:
                        raise RuntimeError(f"{stored} rows stored for {out}")
                runs.append(
                    {
                        "seconds": round(total_s, 3),
                        "recipients_per_s": round(size / total_s),
                        "api_rss_before_mb": mb(rss_before),
                        "api_rss_peak_mb": mb(peak),
                        "api_rss_growth_mb": mb(peak - rss_before),
                    }
                )
            best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # median run
            report["runs"][str(size)] = {"median": best, "all": runs}
            print(
                f"{size:>9,} recipients: {best['recipients_per_s']:>9,}/s "
                f"({best['seconds']} s), API RSS +{best['api_rss_growth_mb']} MB",
                flush=True,
            )
        limit = await copy_limit(stack, template_id, PER_BATCH, args.repeat)
        report["limit_copy"] = limit
    finally:
        await stack.drop()

    rows = []
    for size, run in report["runs"].items():
        r = run["median"]
        n = int(size)
        rows.append(
            (
                f"{n:,} recipients/s",
                r["recipients_per_s"],
                ">= 100,000",
                r["recipients_per_s"] >= 100_000,
            )
        )
        rows.append(
            (
                f"{n:,} answered in s",
                r["seconds"],
                "<= 1.5" if n == PER_BATCH else "",
                r["seconds"] <= 1.5 if n == PER_BATCH else None,
            )
        )
        rows.append(
            (
                f"{n:,} API RSS growth MB",
                r["api_rss_growth_mb"],
                "<= 150" if n == PER_BATCH else "",
                r["api_rss_growth_mb"] <= 150 if n == PER_BATCH else None,
            )
        )
        rows.append(
            (
                f"{n:,} ratio to COPY",
                round(r["recipients_per_s"] / limit["rows_per_s"], 3),
                "",
                None,
            )
        )
    rows.append(("limit: plain COPY rows/s (100k)", limit["rows_per_s"], "", None))
    print_table("bench/ingest (PostgreSQL + Redis)", rows)
    write_results(args.output, report)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="ingestion benchmark")
    parser.add_argument(
        "--sizes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[10_000, 100_000, 1_000_000],
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", default="ingest")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
