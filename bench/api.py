"""bench/api: what an API request costs, and how the API answers while mail goes out.

1. Ratios: API CPU per request of GET /batches/:id, GET /batches/:id/events,
   GET /emails/:id, a single-recipient POST /batches and a one-address POST /emails (by
   template), each against its reference
   (bench/reference.py: a bare ASGI route on the same server process, one cached key
   lookup, the same database work with raw asyncpg), real and reference alternating.
   Target: real <= 2 x reference.
2. p50/p99 of the mix (400 GET + 100 POST per 500 req/s, open loop, bench/loadgen.py) with
   nothing sending, then while a 100k batch sends through one worker at SEND_RATE (1000) to
   the mock SES (30 ms), at --rate and at each of --more-rates. The API is pinned to core 0
   (`taskset`), the worker to core 1. Target: p99 < 50 ms at 500 req/s while sending.

    bench/api                                   # 500 req/s, 10 s a phase
    bench/api --more-rates 600,700,800 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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

REF = "/_bench/ref/batches"  # bench/reference.py
API_CPU = 0  # the API processes are pinned to core 0, the worker to core 1


PAIRS = (
    # (name, kind, real path, reference path): `kind` get or post
    ("GET /batches/:id", "get", "/api/v1/batches/{id}", f"{REF}/{{id}}"),
    ("GET /batches/:id/events", "get", "/api/v1/batches/{id}/events", f"{REF}/{{id}}/events"),
    ("GET /emails/:id", "get", "/api/v1/emails/{email}", "/_bench/ref/emails/{email}"),
    ("POST /batches (1 recipient)", "post", "/api/v1/batches", REF),
    ("POST /emails (1 address)", "post", "/api/v1/emails", "/_bench/ref/emails"),
)


def load(
    stack: Stack,
    api: Proc,
    batch_id: str,
    template_id: str,
    *,
    rate: float,
    seconds: float,
    post_every: int,
    get_path: str = "",
    post_path: str = "/api/v1/batches",
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
            str(rate),
            "--seconds",
            str(seconds),
            "--post-every",
            str(post_every),
            "--get-path",
            get_path,
            "--post-path",
            post_path,
            "--post-body",
            "email" if post_path.endswith("/emails") else "batch",
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


def ratios(
    stack: Stack,
    api: Proc,
    args: argparse.Namespace,
    batch_id: str,
    template_id: str,
    email_id: str,
) -> list[dict[str, Any]]:
    """API CPU per request of each real endpoint and of its reference, alternating real and
    reference `--ratio-rounds` times at a rate well below saturation; medians."""
    found = []
    for name, kind, real, ref in PAIRS:
        cpu: dict[str, list[float]] = {"real": [], "ref": []}
        errors = 0
        for _ in range(args.ratio_rounds):
            for which, path in (("real", real), ("ref", ref)):
                path = path.format(id=batch_id, email=email_id)
                r = load(
                    stack,
                    api,
                    batch_id,
                    template_id,
                    rate=args.ratio_rate if kind == "get" else args.ratio_rate / 2,
                    seconds=args.ratio_seconds,
                    post_every=1 if kind == "post" else 0,
                    get_path=path if kind == "get" else "",
                    post_path=path if kind == "post" else "/api/v1/batches",
                )
                errors += r[kind]["errors"]
                cpu[which].append(r["api_cpu_ms_per_request"])
        real_ms, ref_ms = statistics.median(cpu["real"]), statistics.median(cpu["ref"])
        found.append(
            {
                "endpoint": name,
                "real_cpu_ms": round(real_ms, 3),
                "reference_cpu_ms": round(ref_ms, 3),
                "ratio": round(real_ms / ref_ms, 2),
                "samples": cpu,
                "errors": errors,
            }
        )
        print(f"  {name}: {real_ms:.3f} / {ref_ms:.3f} ms", flush=True)
    return found


class _Done(Exception):
    """--ratios-only: the load phases are skipped."""


def ratio_rows(report: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    rows: list[tuple[str, Any, Any, Any]] = []
    for found in report.get("ratios", []):
        name = found["endpoint"]
        cpu = f"{found['real_cpu_ms']} / {found['reference_cpu_ms']}"
        rows.append((f"{name}: API CPU ms, real / reference", cpu, "", None))
        rows.append((f"{name}: ratio to reference", found["ratio"], "<= 2", found["ratio"] <= 2))
    return rows


async def main_async(args: argparse.Namespace) -> int:
    stack = Stack("api")
    report = new_report(
        rate=args.rate,
        post_every=args.post_every,
        api_workers=args.api_workers,
        api_cpu=API_CPU,
        send_rate=args.send_rate,
    )
    try:
        await stack.create()
        mock, url = start_mock_ses(stack, latency=0.03)
        api = stack.start_api(
            workers=args.api_workers,
            cpu=API_CPU,
            MAILER_BENCH_REFERENCE=str(BENCH / "reference.py"),
            **({"DB_POOL_SIZE": str(args.pool_size)} if args.pool_size else {}),
        )
        template_id = await stack.create_template()
        small, _ = await stack.post_batch(batch_body(template_id, recipients(10, prefix="x")))
        stack.start_worker(
            MAIL_TRANSPORT="ses",
            AWS_ENDPOINT_URL=url,
            SEND_RATE=str(args.send_rate),
            WORKER_CONCURRENCY=str(args.concurrency),
        )
        await stack.wait_completed(small["id"], timeout=30)
        if args.ratio_rounds:
            print("phase ratios ...", flush=True)
            async with stack.client() as client:
                page = await client.get("/api/v1/emails", params={"batch_id": small["id"]})
                email_id = str(page.json()["data"][0]["id"])
            report["ratios"] = ratios(stack, api, args, small["id"], template_id, email_id)
        if args.ratios_only:
            raise _Done
        print("phase idle ...", flush=True)
        report["idle"] = load(
            stack,
            api,
            small["id"],
            template_id,
            rate=args.rate,
            seconds=args.seconds,
            post_every=args.post_every,
        )
        big, _ = await stack.post_batch(batch_body(template_id, recipients(args.recipients)))
        report["sending"] = {}
        for rate in [args.rate, *args.more_rates]:
            before = mock_stats(url)["accepted"]
            t0 = time.perf_counter()
            print(f"phase sending at {rate:g} req/s ...", flush=True)
            r = load(
                stack,
                api,
                big["id"],
                template_id,
                rate=rate,
                seconds=args.seconds,
                post_every=args.post_every,
            )
            sent = mock_stats(url)["accepted"] - before
            r["emails_per_s_meanwhile"] = round(sent / (time.perf_counter() - t0), 1)
            report["sending"][f"{rate:g}"] = r
        mock.stop()
    except _Done:
        pass
    finally:
        await stack.drop()
    rows = ratio_rows(report)
    if args.ratios_only:
        print_table("bench/api: API CPU per request, real / reference", rows)
        write_results(args.output, report)
        return 0
    phases = [("idle", report["idle"])]
    phases += [(f"sending, {rate} req/s", r) for rate, r in report["sending"].items()]
    best = None
    for phase, r in phases:
        held = r["get"]["p99_ms"] < 50 and r["post"]["p99_ms"] < 50
        if (
            phase.startswith("sending")
            and held
            and r["achieved_rate"] >= 0.98 * float(phase.split()[1])
        ):
            best = max(best or 0.0, float(phase.split()[1]))
        for kind in ("get", "post"):
            k = r[kind]
            target = "< 50" if phase != "idle" else ""
            ok = k["p99_ms"] < 50 if phase != "idle" else None
            name = "GET /batches/:id" if kind == "get" else "POST /batches (1)"
            rows.append((f"{phase}: {name} p50 ms", k["p50_ms"], "", None))
            rows.append((f"{phase}: {name} p99 ms", k["p99_ms"], target, ok))
            rows.append((f"{phase}: {name} errors", k["errors"], "0", k["errors"] == 0))
        rows.append((f"{phase}: achieved req/s", r["achieved_rate"], "", None))
        rows.append((f"{phase}: API CPU ms per request", r["api_cpu_ms_per_request"], "", None))
        if "emails_per_s_meanwhile" in r:
            rows.append(
                (f"{phase}: emails/s sent meanwhile", r["emails_per_s_meanwhile"], "", None)
            )
    report["largest_rate_p99_under_50ms_while_sending"] = best
    rows.append(
        (
            "largest rate tried holding p99 < 50 ms while sending",
            best,
            f">= {args.rate:g}",
            None if best is None else best >= args.rate,
        )
    )
    print_table(
        f"bench/api: API on core {API_CPU}, worker on core 1 at SEND_RATE={args.send_rate}", rows
    )
    write_results(args.output, report)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="API latency under load while sending")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--post-every", type=int, default=5)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--api-workers", type=int, default=1, help="mailer api --workers")
    parser.add_argument("--send-rate", type=int, default=1000, help="the worker's SEND_RATE")
    parser.add_argument(
        "--more-rates",
        type=lambda v: [float(x) for x in v.split(",") if x],
        default=[],
        help="further rates to try while sending, e.g. 600,700,800",
    )
    parser.add_argument("--ratio-rate", type=float, default=200, help="GET/s in the ratio phase")
    parser.add_argument("--ratio-seconds", type=float, default=5)
    parser.add_argument("--ratio-rounds", type=int, default=3, help="0: no ratio phase")
    parser.add_argument("--pool-size", type=int, default=0, help="the API's DB_POOL_SIZE")
    parser.add_argument("--ratios-only", action="store_true", help="skip the load phases")
    parser.add_argument("--output", default="api")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
