"""bench/api: p50/p99 latency of GET /batches/:id and single-recipient POST /batches at a
fixed open-loop request rate (bench/loadgen.py), first with nothing sending (the limit the
figures are compared against), then while a 100k batch sends at full speed through one
worker to the mock SES (30 ms).

    bench/api                        # 500 req/s (400 GET + 100 POST), 10 s each phase
    bench/api --rate 500 --seconds 30
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH,
    PYTHON,
    Proc,
    Stack,
    batch_body,
    mock_stats,
    new_report,
    print_table,
    recipients,
    start_mock_ses,
    write_results,
)


def load(
    stack: Stack, api: Proc, args: argparse.Namespace, batch_id: str, template_id: str
) -> dict[str, Any]:
    cpu_before = api.cpu_seconds()
    out = subprocess.run(
        [
            PYTHON,
            str(BENCH / "loadgen.py"),
            "--url",
            stack.api_url,
            "--key",
            stack.key,
            "--batch-id",
            batch_id,
            "--template-id",
            template_id,
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds),
            "--post-every",
            str(args.post_every),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    served = result["get"]["count"] + result["post"]["count"]
    cpu = api.cpu_seconds() - cpu_before
    result["api_cpu_ms_per_request"] = round(1000 * cpu / served, 3) if served else None
    return result


async def main_async(args: argparse.Namespace) -> int:
    stack = Stack("api")
    report = new_report(
        rate=args.rate,
        post_every=args.post_every,
        api_workers=args.api_workers,
    )
    try:
        await stack.create()
        mock, url = start_mock_ses(stack, latency=0.03)
        api = stack.start_api(workers=args.api_workers)
        template_id = await stack.create_template()
        small, _ = await stack.post_batch(batch_body(template_id, recipients(10, prefix="x")))
        stack.start_worker(
            MAIL_TRANSPORT="ses",
            AWS_ENDPOINT_URL=url,
            SEND_RATE="0",
            WORKER_CONCURRENCY=str(args.concurrency),
        )
        await stack.wait_completed(small["id"], timeout=30)
        print("phase idle ...", flush=True)
        report["idle"] = load(stack, api, args, small["id"], template_id)
        big, _ = await stack.post_batch(batch_body(template_id, recipients(args.recipients)))
        before = mock_stats(url)["accepted"]
        t0 = time.perf_counter()
        print("phase sending ...", flush=True)
        report["sending"] = load(stack, api, args, big["id"], template_id)
        sent = mock_stats(url)["accepted"] - before
        report["sending"]["emails_per_s_meanwhile"] = round(sent / (time.perf_counter() - t0), 1)
        mock.stop()
    finally:
        await stack.drop()

    rows = []
    for phase in ("idle", "sending"):
        r = report[phase]
        for kind in ("get", "post"):
            k = r[kind]
            target = "< 50" if phase == "sending" else ""
            ok = k["p99_ms"] < 50 if phase == "sending" else None
            name = "GET /batches/:id" if kind == "get" else "POST /batches (1)"
            rows.append((f"{phase}: {name} p50 ms", k["p50_ms"], "", None))
            rows.append((f"{phase}: {name} p99 ms", k["p99_ms"], target, ok))
            rows.append((f"{phase}: {name} errors", k["errors"], "0", k["errors"] == 0))
        rows.append((f"{phase}: achieved req/s", r["achieved_rate"], f"{args.rate:g}", None))
        rows.append((f"{phase}: API CPU ms per request", r["api_cpu_ms_per_request"], "", None))
    rows.append(
        ("emails/s sent during the load", report["sending"]["emails_per_s_meanwhile"], "", None)
    )
    print_table(f"bench/api: {args.rate:g} req/s open loop", rows)
    write_results(args.output, report)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="API latency under load while sending")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--post-every", type=int, default=5)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--api-workers", type=int, default=2, help="mailer api --workers")
    parser.add_argument("--output", default="api")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
