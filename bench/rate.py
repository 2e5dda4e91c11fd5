"""bench/rate: SEND_RATE with two workers sharing the Redis rate limiter; the highest count
of sends the mock SES sees in any 1-second window (wall-clock seconds and sliding).

    bench/rate                          # SEND_RATE=200, 6,000 recipients (~30 s)
    bench/rate --rate 200 --recipients 12000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

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


async def main_async(args: argparse.Namespace) -> int:
    stack = Stack("rate")
    report = new_report(
        send_rate=args.rate,
        workers=args.workers,
        recipients=args.recipients,
    )
    try:
        await stack.create()
        mock, url = start_mock_ses(stack, latency=args.latency)
        stack.start_api()
        template_id = await stack.create_template()
        env = {
            "MAIL_TRANSPORT": "ses",
            "AWS_ENDPOINT_URL": url,
            "SEND_RATE": str(args.rate),
            "WORKER_CONCURRENCY": str(args.concurrency),
        }
        for i in range(args.workers):
            stack.start_worker(f"worker{i}", cpu=None, **env)
        mock_reset(url)
        started = time.perf_counter()
        out, _ = await stack.post_batch(batch_body(template_id, recipients(args.recipients)))
        await stack.wait_completed(out["id"], timeout=args.recipients / args.rate * 3 + 60)
        seconds = time.perf_counter() - started
        stats = mock_stats(url)
        counts = await stack.status_counts(out["id"])
        mock.stop()
    finally:
        await stack.drop()

    per_second = {int(k): v for k, v in stats.pop("per_second").items()}
    full = [v for k, v in sorted(per_second.items())][1:-1]  # first/last seconds are partial
    report.update(
        {
            "seconds": round(seconds, 2),
            "average_per_s": round(stats["accepted"] / (stats["last"] - stats["first"]), 1),
            "busiest_second": stats["busiest_second"],
            "busiest_sliding_1s": stats["busiest_sliding_1s"],
            "full_seconds_median": statistics.median(full) if full else None,
            "per_second": per_second,
            "mock": stats,
            "statuses": counts,
        }
    )
    limit = args.rate * 1.01
    rows = [
        ("SEND_RATE (the limit)", args.rate, "", None),
        (
            "busiest wall-clock second",
            report["busiest_second"],
            f"<= {limit:g}",
            report["busiest_second"] <= limit,
        ),
        (
            "busiest sliding 1-s window",
            report["busiest_sliding_1s"],
            f"<= {limit:g}",
            report["busiest_sliding_1s"] <= limit,
        ),
        (
            "ratio busiest second / SEND_RATE",
            round(report["busiest_second"] / args.rate, 3),
            "",
            None,
        ),
        ("average sends/s over the run", report["average_per_s"], "", None),
        ("duplicates at the mock", stats["duplicates"], "0", stats["duplicates"] == 0),
        ("all SENT", str(counts.get("SENT", 0) == args.recipients), "", None),
    ]
    print_table(f"bench/rate: SEND_RATE={args.rate}, {args.workers} workers", rows)
    write_results(args.output, report)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="global send-rate benchmark")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipients", type=int, default=6000)
    parser.add_argument("--latency", type=float, default=0.03)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--output", default="rate")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
