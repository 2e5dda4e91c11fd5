"""bench/console: the console's pages on a big database. Loads a generated data set with
COPY (1M recipients and 10M events by default: half of the recipients in one big batch, the
rest over many small ones, each address in several batches; suppressions, dead letters and a
day of per-minute metrics), starts `mailer api`, signs in to the console and prints each
page's p50/p95 latency over sequential requests (target: p95 < 100 ms).

    bench/console                                     # 1M recipients, 10M events (~10 min)
    bench/console --recipients 100000 --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Stack, busy_neighbours, machine, print_table, write_results

from mailer.ids import new_id

EVENT_TYPES = ("SENT", "DELIVERY", "OPEN", "CLICK", "OPEN", "DELIVERY_DELAY", "OPEN", "CLICK")
TARGET_P95_MS = 100.0
COPY_ROWS = 200_000


def _rows(total: int, make: Any) -> Iterator[list[tuple[Any, ...]]]:
    for start in range(0, total, COPY_ROWS):
        yield [make(i) for i in range(start, min(total, start + COPY_ROWS))]


class DataSet:
    def __init__(self, recipients: int, events: int, batches: int, template: tuple[str, str]):
        self.n = recipients
        self.events = events
        self.template_id, self.version_id = template
        self.now = datetime.now(UTC)
        big = recipients // 2
        small = max(1, (recipients - big) // max(1, batches - 1))
        sizes = [big] + [small] * (batches - 1)
        sizes[-1] += recipients - sum(sizes)
        self.batches: list[tuple[str, int, int]] = []  # id, first recipient index, size
        first = 0
        for size in sizes:
            self.batches.append((new_id(), first, size))
            first += size
        self.batch_of = [0] * recipients
        for b, (_, start, size) in enumerate(self.batches):
            for i in range(start, start + size):
                self.batch_of[i] = b
        self.addresses = max(1, recipients // 4)  # each address in about four batches

    def email(self, i: int) -> str:
        return f"person{i % self.addresses}@example.com"

    def status(self, i: int) -> str:
        return "FAILED" if i % 100 == 7 else "BOUNCED" if i % 200 == 3 else "DELIVERED"

    def batch_row(self, b: int) -> tuple[Any, ...]:
        batch_id, start, size = self.batches[b]
        failed = sum(1 for i in range(start, start + size) if self.status(i) == "FAILED")
        bounced = sum(1 for i in range(start, start + size) if self.status(i) == "BOUNCED")
        created = self.now - timedelta(minutes=len(self.batches) - b)
        return (
            batch_id,
            self.template_id,
            self.version_id,
            "COMPLETED" if b else "SENDING",
            '{"campaign": "bench"}',
            f'{{"campaign": "c{b % 10}"}}',
            "[]",
            True,
            size,
            0,
            0,
            size - failed,
            failed,
            0,
            size - failed - bounced,
            bounced,
            0,
            100,
            created,
            created,
            created if b else None,
        )

    def recipient_row(self, i: int) -> tuple[Any, ...]:
        batch_id, start, _ = self.batches[self.batch_of[i]]
        status = self.status(i)
        sent = self.now - timedelta(seconds=i % 86_400)
        return (
            i + 1,
            batch_id,
            i - start,
            self.email(i),
            '{"name": "Ada"}',
            status,
            3 if status == "FAILED" else 1,
            "550 5.1.1 mailbox unavailable" if status == "FAILED" else None,
            None if status == "FAILED" else f"ses-{i}",
            None if status == "FAILED" else sent,
            sent,
        )

    def event_row(self, j: int) -> tuple[Any, ...]:
        i = j * self.n // self.events
        batch_id = self.batches[self.batch_of[i]][0]
        created = self.now - timedelta(seconds=(self.events - j) * 86_400 // self.events)
        return (batch_id, i + 1, self.email(i), EVENT_TYPES[j % len(EVENT_TYPES)], "{}", created)


async def load(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    timings: dict[str, float] = {}
    try:
        template = await conn.fetchrow(
            "SELECT id, current_version_id FROM templates ORDER BY created_at LIMIT 1"
        )
        data = DataSet(args.recipients, args.events, args.batches, (template[0], template[1]))

        async def copy(table: str, columns: list[str], chunks: Iterator[Any]) -> None:
            started = time.perf_counter()
            for chunk in chunks:
                await conn.copy_records_to_table(table, records=chunk, columns=columns)
            timings[table] = round(time.perf_counter() - started, 1)
            print(f"  {table}: {timings[table]} s", flush=True)

        await copy(
            "batches",
            [
                "id",
                "template_id",
                "template_version_id",
                "status",
                "metadata",
                "tags",
                "reply_to",
                "unsubscribe",
                "total_recipients",
                "duplicate_count",
                "suppressed_count",
                "sent_count",
                "failed_count",
                "cancelled_count",
                "delivered_count",
                "bounced_count",
                "complained_count",
                "chunk_size",
                "created_at",
                "started_at",
                "completed_at",
            ],
            _rows(len(data.batches), data.batch_row),
        )
        await copy(
            "recipients",
            [
                "id",
                "batch_id",
                "seq",
                "email",
                "variables",
                "status",
                "attempts",
                "last_error",
                "provider_message_id",
                "sent_at",
                "updated_at",
            ],
            _rows(data.n, data.recipient_row),
        )
        await conn.execute("SELECT setval('recipients_id_seq', $1)", data.n)
        await copy(
            "events",
            ["batch_id", "recipient_id", "email", "type", "data", "created_at"],
            _rows(data.events, data.event_row),
        )
        await copy(
            "suppressions",
            ["email", "reason", "source", "created_at"],
            _rows(
                args.suppressions,
                lambda i: (
                    f"blocked{i:07d}@example.org",
                    "BOUNCE",
                    '{"type": "bench"}',
                    data.now,
                ),
            ),
        )
        big_id = data.batches[0][0]
        await copy(
            "dead_letters",
            [
                "batch_id",
                "seq_start",
                "seq_end",
                "recipient_count",
                "recipient_ids",
                "error",
                "attempts",
                "failed_at",
            ],
            _rows(
                1000,
                lambda i: (
                    big_id,
                    i * 100,
                    i * 100 + 100,
                    1,
                    f"[{i * 100 + 8}]",
                    "550 unavailable",
                    3,
                    data.now,
                ),
            ),
        )
        minute = data.now.replace(second=0, microsecond=0)
        await copy(
            "metrics",
            ["bucket", "kind", "count"],
            _rows(
                1440 * 5,
                lambda i: (
                    minute - timedelta(minutes=i // 5),
                    ("sent", "delivered", "bounced", "complained", "failed")[i % 5],
                    [700, 680, 12, 1, 7][i % 5],
                ),
            ),
        )
        started = time.perf_counter()
        await conn.execute("ANALYZE")
        timings["analyze"] = round(time.perf_counter() - started, 1)
        middle_event = await conn.fetchval(
            "SELECT id FROM events WHERE batch_id = $1 ORDER BY id OFFSET $2 LIMIT 1",
            big_id,
            args.events // 4,
        )
    finally:
        await conn.close()
    return {
        "timings_s": timings,
        "big_batch": big_id,
        "small_batch": data.batches[-1][0],
        "older_than": data.batches[len(data.batches) // 2][0],
        "middle_event": middle_event,
        "address": data.email(data.n // 3),
        "template": data.template_id,
    }


def sign_in(client: httpx.Client, key: str) -> None:
    page = client.get("/console/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post(
        "/console/login", data={"key": key, "csrf_token": token.group(1), "next": ""}
    )
    if answer.status_code != 303:
        raise RuntimeError(f"console sign-in failed: {answer.status_code} {answer.text[:300]}")


def pages(loaded: dict[str, Any]) -> list[tuple[str, str]]:
    big, small = loaded["big_batch"], loaded["small_batch"]
    return [
        ("overview", "/console/"),
        ("batches", "/console/batches"),
        ("batches, older page", f"/console/batches?before={loaded['older_than']}"),
        ("batches by status", "/console/batches?status=COMPLETED"),
        ("batches by tag", "/console/batches?tag=campaign%3Dc3"),
        ("big batch", f"/console/batches/{big}"),
        ("big batch, SENT events", f"/console/batches/{big}?event_type=SENT"),
        (
            "big batch, CLICK events deep",
            f"/console/batches/{big}?event_type=CLICK&events_after={loaded['middle_event']}",
        ),
        ("big batch, COMPLAINT events (none)", f"/console/batches/{big}?event_type=COMPLAINT"),
        ("big batch, failures page 2", f"/console/batches/{big}?failures_after=5000"),
        ("big batch, live counts", f"/console/batches/{big}/live.json"),
        ("small batch", f"/console/batches/{small}"),
        ("address search", f"/console/addresses?email={loaded['address']}"),
        ("templates", "/console/templates"),
        ("template edit", f"/console/templates/{loaded['template']}"),
        ("suppressions", "/console/suppressions"),
        ("suppressions search", "/console/suppressions?q=blocked00421"),
        ("dead letters", "/console/dead-letters"),
        ("API keys", "/console/keys"),
    ]


def measure(client: httpx.Client, path: str, requests: int) -> tuple[float, float]:
    for _ in range(3):
        client.get(path).raise_for_status()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--suppressions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40, help="per page, after 3 warm-ups")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    neighbours = busy_neighbours()
    stack = Stack("console")
    await stack.create()
    try:
        # Plain http here: with an https PUBLIC_URL the console's cookies are Secure.
        stack.start_api(PUBLIC_URL="http://127.0.0.1")
        await stack.create_template()
        print(f"loading {args.recipients:,} recipients, {args.events:,} events ...", flush=True)
        loaded = await load(stack, args)
        rows = []
        figures: dict[str, dict[str, float]] = {}
        with httpx.Client(base_url=stack.api_url, timeout=60) as client:
            sign_in(client, stack.key)
            for name, path in pages(loaded):
                p50, p95 = measure(client, path, args.requests)
                figures[name] = {"p50_ms": round(p50, 1), "p95_ms": round(p95, 1)}
                rows.append(
                    (
                        f"{name} p50 / p95 ms",
                        f"{p50:.1f} / {p95:.1f}",
                        f"p95 < {TARGET_P95_MS:.0f}",
                        p95 < TARGET_P95_MS,
                    )
                )
        print_table(
            f"console pages, {args.recipients:,} recipients / {args.events:,} events "
            f"({args.requests} sequential requests each)",
            rows,
        )
        write_results(
            "console",
            {
                "args": vars(args),
                "machine": machine(),
                "busy_neighbours": neighbours,
                "load": loaded,
                "pages": figures,
            },
        )
    finally:
        if args.keep:
            stack.stop_all()
        else:
            await stack.drop()


if __name__ == "__main__":
    asyncio.run(main())
