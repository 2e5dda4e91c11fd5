"""bench/emails_lookup: GET /api/v1/emails on a big database. Loads `--rows` messages
(recipients) with generate_series: most in big batches of 100k (one still sending, the
rest delivered), the others in small batches of 10 (single emails and small sends), every
address in about four messages, statuses as a provider leaves them (mostly DELIVERED,
0.5 % FAILED, 0.2 % BOUNCED, 0.1 % SUPPRESSED, 1 in 100k COMPLAINED), tags on every batch
(a campaign on the big ones, a kind on all, a reference unique to each). Then starts
`mailer api` and prints p50/p95 of each query shape over sequential requests, for its first
page and for its second page (through nextCursor). Target: p95 < 100 ms.

    bench/emails_lookup                          # 1M messages (~2 min)
    bench/emails_lookup --rows 10000000 --keep   # 10M (~15 min), database kept
    bench/emails_lookup --reuse mailer_bench_emails_lookup_1234   # migrate, measure again
    bench/emails_lookup --write-cost 200000      # what an index on status costs a send

--write-cost: PostgreSQL CPU (its backend's user + system time) per recipient of the
statements a send makes (ingest as PENDING, claim to SENDING, outcome SENT), in chunks of
100 as the worker does, without an index on status, with the partial index of rare
statuses (the schema) and with a full (status, id) index; the variants alternate.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PG_ADMIN, Stack, busy_neighbours, machine, print_table, write_results

from mailer.ids import new_id

TARGET_P95_MS = 100.0
BIG = 100_000
SMALL = 10
SPAN = timedelta(days=30)  # batches are created over the last 30 days


def plan_batches(rows: int, big_share: float) -> list[tuple[str, int, int, datetime]]:
    """(batch id, first recipient id, size, created_at), oldest first: the big batches
    spread evenly among the small ones; the newest batch is a big one (still sending)."""
    n_big = max(1, round(rows * big_share / BIG))
    n_small = max(1, (rows - n_big * BIG) // SMALL)
    total = n_big + n_small
    big_at = {total - 1 - round(k * total / n_big) for k in range(n_big)}
    now = datetime.now(UTC)
    out = []
    first = 1
    for p in range(total):
        size = BIG if p in big_at else SMALL
        out.append((new_id(), first, size, now - SPAN * (total - p) / total))
        first += size
    return out


async def load(conn: asyncpg.Connection, rows: int, big_share: float) -> dict[str, Any]:
    timings: dict[str, float] = {}
    template = await conn.fetchrow(
        "SELECT id, current_version_id FROM templates ORDER BY created_at LIMIT 1"
    )
    batches = plan_batches(rows, big_share)
    newest = len(batches) - 1
    started = time.perf_counter()
    await conn.execute(
        "CREATE UNLOGGED TABLE bench_plan (id text, first_id bigint, size int, pos int, "
        "created_at timestamptz)"
    )
    await conn.copy_records_to_table(
        "bench_plan",
        records=[(b, f, s, p, c) for p, (b, f, s, c) in enumerate(batches)],
        columns=["id", "first_id", "size", "pos", "created_at"],
    )
    await conn.execute(
        """
        INSERT INTO batches (id, template_id, template_version_id, status, metadata, tags,
                             reply_to, unsubscribe, total_recipients, duplicate_count,
                             suppressed_count, sent_count, failed_count, cancelled_count,
                             delivered_count, bounced_count, complained_count, chunk_size,
                             created_at, started_at, completed_at)
        SELECT id, $1, $2, CASE WHEN pos = $3 THEN 'SENDING' ELSE 'COMPLETED' END, '{}',
               jsonb_build_object('kind', CASE WHEN size > 10 THEN 'newsletter' ELSE 'receipt'
                                  END, 'ref', 'r' || pos)
               || CASE WHEN size > 10 THEN jsonb_build_object('campaign', 'c' || (pos % 10))
                  ELSE '{}'::jsonb END,
               '[]', true, size, 0, 0, 0, 0, 0, 0, 0, 0, 100, created_at, created_at,
               CASE WHEN pos = $3 THEN NULL ELSE created_at + interval '1 minute' END
        FROM bench_plan
        """,
        template["id"],
        template["current_version_id"],
        newest,
    )
    timings["batches"] = round(time.perf_counter() - started, 1)
    print(f"  batches: {len(batches):,} in {timings['batches']} s", flush=True)
    started = time.perf_counter()
    # Status by id: the newest batch is still sending (its last 90 % PENDING); elsewhere
    # mostly DELIVERED, with rare FAILED, BOUNCED, SUPPRESSED and COMPLAINED rows.
    addresses = max(1, rows // 4)
    await conn.execute(
        f"""
        INSERT INTO recipients (id, batch_id, seq, email, variables, status, attempts,
                                last_error, provider_message_id, sent_at, updated_at)
        SELECT i, p.id, g, 'person' || (i % {addresses}) || '@example.com', '{{}}', s.status,
               1, CASE WHEN s.status = 'FAILED' THEN '550 5.1.1 mailbox unavailable' END,
               CASE WHEN s.status NOT IN ('FAILED', 'SUPPRESSED', 'PENDING')
                    THEN 'ses-' || i END,
               CASE WHEN s.status NOT IN ('FAILED', 'SUPPRESSED', 'PENDING')
                    THEN p.created_at END,
               p.created_at
        FROM bench_plan AS p, generate_series(0, p.size - 1) AS g,
             LATERAL (SELECT p.first_id + g AS i) AS n,
             LATERAL (SELECT CASE
                 WHEN p.pos = {newest} AND g >= p.size / 10 THEN 'PENDING'
                 WHEN i % 100000 = 77 THEN 'COMPLAINED'
                 WHEN i % 1000 < 5 THEN 'FAILED'
                 WHEN i % 1000 < 7 THEN 'BOUNCED'
                 WHEN i % 1000 = 7 THEN 'SUPPRESSED'
                 ELSE 'DELIVERED' END AS status) AS s
        """  # noqa: S608
    )
    await conn.execute("SELECT setval('recipients_id_seq', (SELECT max(id) FROM recipients))")
    timings["recipients"] = round(time.perf_counter() - started, 1)
    print(f"  recipients: {rows:,} in {timings['recipients']} s", flush=True)
    started = time.perf_counter()
    await conn.execute("DROP TABLE bench_plan")
    await conn.execute("VACUUM ANALYZE batches")
    await conn.execute("VACUUM ANALYZE recipients")
    timings["vacuum_analyze"] = round(time.perf_counter() - started, 1)
    return {"timings_s": timings, "batches": len(batches)}


async def probe(conn: asyncpg.Connection) -> dict[str, Any]:
    """Values the query shapes use, read from the loaded data."""
    big = await conn.fetch(
        "SELECT id, tags->>'campaign' AS campaign FROM batches WHERE total_recipients > 10 "
        "ORDER BY created_at DESC LIMIT 3"
    )
    small = await conn.fetchrow(
        "SELECT id, tags->>'ref' AS ref FROM batches WHERE total_recipients <= 10 "
        "ORDER BY created_at LIMIT 1 OFFSET (SELECT count(*) / 2 FROM batches)"
    )
    newest = await conn.fetchval("SELECT max(created_at) FROM batches")
    middle = await conn.fetchval("SELECT max(id) / 2 FROM recipients")
    address = await conn.fetchval("SELECT email FROM recipients WHERE id = $1", middle)
    return {
        "sending_batch": big[0]["id"],
        "delivered_batch": big[1]["id"],
        "campaign": big[1]["campaign"],
        "small_batch": small["id"],
        "rare_ref": small["ref"],
        "address": address,
        "recent": (newest - timedelta(hours=1)).isoformat(),
    }


RARE = "'FAILED', 'BOUNCED', 'COMPLAINED', 'SUPPRESSED', 'CANCELLED', 'RETRYING'"
WRITE_VARIANTS = {
    "no status index": [],
    "partial index of rare statuses (schema)": [
        f"CREATE INDEX ix_recipients_rare_status_id ON recipients (status, id) "
        f"WHERE status IN ({RARE})"
    ],
    "full (status, id) index": ["CREATE INDEX ix_bench_status_id ON recipients (status, id)"],
}


async def write_cost(stack: Stack, rows: int, rounds: int) -> dict[str, list[float]]:
    """Backend CPU µs per recipient for ingest + claim + outcome, per variant and round."""
    import psutil

    out: dict[str, list[float]] = {name: [] for name in WRITE_VARIANTS}
    admin = await asyncpg.connect(stack.env["DATABASE_URL"])
    try:
        version = await admin.fetchrow("SELECT id, template_id FROM template_versions LIMIT 1")
        for round_ in range(rounds):
            for name, setup in WRITE_VARIANTS.items():
                await admin.execute("DROP INDEX IF EXISTS ix_bench_status_id")
                await admin.execute("DROP INDEX IF EXISTS ix_recipients_rare_status_id")
                for statement in setup:
                    await admin.execute(statement)
                await admin.execute("TRUNCATE recipients, batches CASCADE")
                batch_id = new_id()
                await admin.execute(
                    "INSERT INTO batches (id, template_id, template_version_id, status, "
                    "metadata, tags, reply_to, unsubscribe, total_recipients, duplicate_count, "
                    "suppressed_count, sent_count, failed_count, cancelled_count, "
                    "delivered_count, bounced_count, complained_count, chunk_size, created_at) "
                    "VALUES ($1, $2, $3, 'SENDING', '{}', '{}', '[]', true, $4, 0, 0, 0, 0, 0, "
                    "0, 0, 0, 100, now())",
                    batch_id,
                    version["template_id"],
                    version["id"],
                    rows,
                )
                await admin.execute("CHECKPOINT")
                conn = await asyncpg.connect(stack.env["DATABASE_URL"])
                try:
                    backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
                    t = backend.cpu_times()
                    cpu0 = t.user + t.system
                    for start in range(0, rows, 10_000):
                        await conn.execute(
                            "INSERT INTO recipients (batch_id, seq, email, variables, status, "
                            "attempts, updated_at) SELECT $1, g, 'w' || g || '@example.com', "
                            "'{}', 'PENDING', 0, now() FROM generate_series($2::int, $3::int) g",
                            batch_id,
                            start,
                            min(rows, start + 10_000) - 1,
                        )
                    for start in range(0, rows, 100):
                        await conn.execute(
                            "UPDATE recipients SET status = 'SENDING', claimed_at = now(), "
                            "attempts = attempts + 1, updated_at = now() "
                            "WHERE batch_id = $1 AND seq >= $2 AND seq < $3",
                            batch_id,
                            start,
                            start + 100,
                        )
                        await conn.execute(
                            "UPDATE recipients SET status = 'SENT', sent_at = now(), "
                            "provider_message_id = 'p' || id, claimed_at = NULL, "
                            "updated_at = now() WHERE batch_id = $1 AND seq >= $2 AND seq < $3",
                            batch_id,
                            start,
                            start + 100,
                        )
                    t = backend.cpu_times()
                    out[name].append((t.user + t.system - cpu0) * 1e6 / rows)
                finally:
                    await conn.close()
                print(f"  round {round_ + 1}, {name}: {out[name][-1]:.1f} µs", flush=True)
    finally:
        await admin.close()
    return out


def shapes(p: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    return [
        ("no filter", {}),
        ("to=", {"to": p["address"]}),
        ("status=DELIVERED (common)", {"status": "DELIVERED"}),
        ("status=PENDING (newest batch)", {"status": "PENDING"}),
        ("status=FAILED (0.5 %)", {"status": "FAILED"}),
        ("status=BOUNCED (0.2 %)", {"status": "BOUNCED"}),
        ("status=COMPLAINED (1 in 100k)", {"status": "COMPLAINED"}),
        ("batch_id= (100k, sending)", {"batch_id": p["sending_batch"]}),
        ("batch_id= (100k, delivered)", {"batch_id": p["delivered_batch"]}),
        ("batch_id= (10)", {"batch_id": p["small_batch"]}),
        ("tag= common (kind:receipt)", {"tag": "kind:receipt"}),
        ("tag= campaign (10 % of big)", {"tag": f"campaign:{p['campaign']}"}),
        ("tag= rare (one batch of 10)", {"tag": f"ref:{p['rare_ref']}"}),
        ("tag= none matches", {"tag": "kind:nothing"}),
        ("since= last hour", {"since": p["recent"]}),
        ("to= & status=DELIVERED", {"to": p["address"], "status": "DELIVERED"}),
        ("batch_id= & status=FAILED", {"batch_id": p["delivered_batch"], "status": "FAILED"}),
        ("batch_id= & status=BOUNCED", {"batch_id": p["delivered_batch"], "status": "BOUNCED"}),
        ("tag=campaign & status=FAILED", {"tag": f"campaign:{p['campaign']}", "status": "FAILED"}),
        ("tag=receipt & status=COMPLAINED", {"tag": "kind:receipt", "status": "COMPLAINED"}),
        ("since=hour & status=FAILED", {"since": p["recent"], "status": "FAILED"}),
        ("since=hour & tag=receipt", {"since": p["recent"], "tag": "kind:receipt"}),
    ]


def measure(
    client: httpx.Client, params: dict[str, str], requests: int, slow_ms: float
) -> tuple[float, float, int]:
    """p50, p95 and count over sequential requests; 3 if the first one is slower than
    slow_ms (a full scan at 10M need not be timed 40 times to be seen)."""
    samples: list[float] = []
    count = requests
    while len(samples) < count:
        started = time.perf_counter()
        answer = client.get("/api/v1/emails", params=params)
        samples.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        if len(samples) == 1 and samples[0] > slow_ms:
            count = 3
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)], count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="messages (recipients)")
    parser.add_argument("--big-share", type=float, default=0.8, help="share in 100k batches")
    parser.add_argument("--requests", type=int, default=30, help="per shape and page")
    parser.add_argument("--limit", type=int, default=50, help="page size")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", help="a database kept by --keep: migrate it, measure again")
    parser.add_argument("--output", default="emails_lookup")
    parser.add_argument("--write-cost", type=int, metavar="ROWS", help="see the module doc")
    parser.add_argument("--rounds", type=int, default=3, help="--write-cost rounds")
    args = parser.parse_args()
    neighbours = busy_neighbours()
    if args.write_cost:
        stack = Stack("emails_write_cost")
        await stack.create()
        try:
            stack.start_api()
            await stack.create_template()
            stack.stop_all()
            costs = await write_cost(stack, args.write_cost, args.rounds)
        finally:
            await stack.drop()
        print_table(
            f"PostgreSQL CPU per recipient, ingest + claim + outcome ({args.write_cost:,} "
            f"rows, {args.rounds} rounds; median, all)",
            [
                (name, f"{statistics.median(v):.1f} µs", ", ".join(f"{x:.1f}" for x in v), None)
                for name, v in costs.items()
            ],
        )
        write_results(
            args.output + "_write_cost",
            {
                "args": vars(args),
                "machine": machine(),
                "busy_neighbours": neighbours,
                "us_per_recipient": costs,
            },
        )
        return
    stack = Stack("emails_lookup")
    loaded: dict[str, Any] = {}
    if args.reuse:
        stack.database = args.reuse
        stack.env["DATABASE_URL"] = f"{PG_ADMIN.rsplit('/', 1)[0]}/{args.reuse}"
        stack.clear_redis()
        stack.mailer("migrate")
        out = stack.mailer("keys", "create", "bench", "--admin")
        match = re.search(r"^([0-9a-f]{64})$", out, re.M)
        assert match is not None, out
        stack.key = match.group(1)
    else:
        await stack.create()
    try:
        stack.start_api()
        conn = await asyncpg.connect(stack.env["DATABASE_URL"])
        try:
            if not args.reuse:
                await stack.create_template()
                print(f"loading {args.rows:,} messages into {stack.database} ...", flush=True)
                loaded = await load(conn, args.rows, args.big_share)
            values = await probe(conn)
            rows = int(await conn.fetchval("SELECT count(*) FROM recipients"))
        finally:
            await conn.close()
        table = []
        figures: dict[str, dict[str, Any]] = {}
        headers = {"Authorization": f"Bearer {stack.key}"}
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=600) as client:
            for name, params in shapes(values):
                params = {**params, "limit": str(args.limit)}
                first = client.get("/api/v1/emails", params=params)
                first.raise_for_status()
                body = first.json()
                found = len(body["data"])
                pages = [("", params)]
                if body["nextCursor"]:
                    pages.append((", page 2", {**params, "cursor": body["nextCursor"]}))
                for suffix, page_params in pages:
                    p50, p95, n = measure(client, page_params, args.requests, 2000)
                    figures[name + suffix] = {
                        "p50_ms": round(p50, 1),
                        "p95_ms": round(p95, 1),
                        "requests": n,
                        "found": found,
                    }
                    table.append(
                        (
                            f"{name}{suffix} ({found})",
                            f"{p50:.1f} / {p95:.1f}",
                            f"p95 < {TARGET_P95_MS:.0f}",
                            p95 < TARGET_P95_MS,
                        )
                    )
                    print(f"  {name}{suffix}: p50 {p50:.1f} ms, p95 {p95:.1f} ms", flush=True)
        print_table(
            f"GET /api/v1/emails, {rows:,} messages, page of {args.limit} "
            f"({args.requests} sequential requests each; p50 / p95 ms)",
            table,
        )
        write_results(
            args.output,
            {
                "args": vars(args),
                "machine": machine(),
                "busy_neighbours": neighbours,
                "database": stack.database,
                "load": loaded,
                "values": values,
                "shapes": figures,
            },
        )
    finally:
        if args.keep or args.reuse:
            stack.stop_all()
            print(f"database kept: {stack.database}")
        else:
            await stack.drop()


if __name__ == "__main__":
    asyncio.run(main())
