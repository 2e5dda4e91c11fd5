"""bench/priority: transactional emails while a large bulk batch sends, on PostgreSQL + Redis
with one worker process and the mock SES (30 ms latency).

    bench/priority                          # 100k bulk; full speed, then SEND_RATE=200
    bench/priority --bulk 20000 --seconds 10 --phases full      # a short run

Per phase: the bulk batch is posted and starts sending; then one POST /emails every 100 ms
for --seconds. Figures: p50/p99/max from each email's 202 to its arrival at the mock SES,
against the targets (p99 < 250 ms at full speed, < 1 s at SEND_RATE=200); the bulk rate at
the mock while the emails went out. The bulk batch is cancelled at the end of the phase.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

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

PHASES = {"full": ("0", 0.25), "rate200": ("200", 1.0)}  # SEND_RATE, p99 target (s)
WATCH = "urgent"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_phase(
    stack: Stack, name: str, template_id: str, args: argparse.Namespace
) -> dict[str, Any]:
    send_rate, target = PHASES[name]
    mock, url = start_mock_ses(stack, latency=0.03, extra=["--watch-prefix", WATCH])
    worker = stack.start_worker(
        f"worker-{name}",
        MAIL_TRANSPORT="ses",
        AWS_ENDPOINT_URL=url,
        SEND_RATE=send_rate,
        WORKER_CONCURRENCY=str(args.concurrency),
        CHUNK_SIZE="100",
    )
    try:
        mock_reset(url)
        body = batch_body(template_id, recipients(args.bulk, prefix=f"bulk-{name}-"))
        batch, _ = await stack.post_batch(body)
        while mock_stats(url)["accepted"] < 100:  # the bulk batch is sending
            await asyncio.sleep(0.05)
        answered: dict[str, float] = {}
        bulk_before = mock_stats(url)["accepted"]
        t_start = time.time()
        async with stack.client() as c:
            count = int(args.seconds * 10)
            for i in range(count):
                due = t_start + i * 0.1
                await asyncio.sleep(max(0.0, due - time.time()))
                to = f"{WATCH}{i}-{name}@example.com"
                r = await c.post(
                    "/api/v1/emails", json={"to": to, "subject": "Code", "text": f"Code {i}"}
                )
                answered[to] = time.time()
                if r.status_code != 202:
                    raise RuntimeError(f"POST /emails: {r.status_code} {r.text[:300]}")
            deadline = time.time() + 60
            while len(mock_stats(url)["watched"]) < count and time.time() < deadline:
                await asyncio.sleep(0.1)
            stats = mock_stats(url)
            t_end = time.time()
            await c.post(f"/api/v1/batches/{batch['id']}/cancel")
    finally:
        worker.stop()
        mock.stop()
    watched: dict[str, float] = stats["watched"]
    latencies = [watched[to] - t for to, t in answered.items() if to in watched]
    bulk_sent = stats["accepted"] - bulk_before - len(watched)
    p99 = percentile(latencies, 0.99) if latencies else float("inf")
    return {
        "send_rate": send_rate,
        "emails": len(answered),
        "arrived": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1) if latencies else None,
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "target_p99_ms": target * 1000,
        "p99_ok": p99 < target,
        "bulk_per_s_meanwhile": round(bulk_sent / (t_end - t_start), 1),
    }


async def main_async(args: argparse.Namespace) -> int:
    phases = args.phases.split(",")
    stack = Stack("priority")
    report = new_report(bulk=args.bulk, seconds=args.seconds, phases={})
    try:
        await stack.create()
        stack.start_api()
        template_id = await stack.create_template()
        for name in phases:
            print(f"phase {name}: {args.bulk:,} bulk, {args.seconds:g} s of emails ...", flush=True)
            report["phases"][name] = await run_phase(stack, name, template_id, args)
    finally:
        await stack.drop()
    rows = []
    for name, r in report["phases"].items():
        limit = f"< {r['target_p99_ms']:.0f}"
        rows.append((f"{name} 202→SES p50 ms", r["p50_ms"], "", None))
        rows.append((f"{name} 202→SES p99 ms", r["p99_ms"], limit, r["p99_ok"]))
        rows.append((f"{name} 202→SES max ms", r["max_ms"], "", None))
        rows.append((f"{name} emails arrived", f"{r['arrived']}/{r['emails']}", "", None))
        rows.append((f"{name} bulk emails/s meanwhile", r["bulk_per_s_meanwhile"], "", None))
    print_table(f"bench/priority: {args.bulk:,} bulk + one email per 100 ms", rows)
    write_results(args.output, report)
    return 0 if all(r["p99_ok"] for r in report["phases"].values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description="transactional latency under bulk load")
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="of one email per 100 ms")
    parser.add_argument("--phases", default="full,rate200")
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--output", default="priority")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
