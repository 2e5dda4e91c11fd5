"""An open-loop HTTP load generator: requests start on a fixed schedule (rate/s) whatever
the server does, and each latency is measured from its scheduled start (no coordinated
omission: a stalled server shows up as latency, not as fewer requests).

    python bench/loadgen.py --url http://127.0.0.1:3000 --key KEY --batch-id ID \\
        --template-id TID --rate 500 --seconds 20 --post-every 5

Every `--post-every`-th request is a single-recipient POST /api/v1/batches, the others
GET /api/v1/batches/ID (`--get-path`, `--post-path` name other endpoints of those
shapes; `--post-body email` sends POST /api/v1/emails's shape). Keep-alive connections
over a raw asyncio protocol (httptools), so the generator itself costs ~50 µs a request.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import httptools
import orjson


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    idle: list[_Conn] = []
    auth = f"Authorization: Bearer {args.key}\r\n"
    get_path = args.get_path or f"/api/v1/batches/{args.batch_id}"
    get_req = (f"GET {get_path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n").encode()

    def post_req(i: int) -> bytes:
        email = f"load{i}-{time.time_ns()}@example.com"
        variables = {"name": f"L{i}", "code": f"c{i}"}
        if args.post_body == "email":
            fields: dict[str, object] = {"template_id": args.template_id, "to": email}
            fields["variables"] = variables
        else:
            recipient = {"email": email, "variables": variables}
            fields = {"template_id": args.template_id, "recipients": [recipient]}
        body = orjson.dumps(fields)
        head = (
            f"POST {args.post_path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head + body

    latencies: dict[str, list[float]] = {"get": [], "post": []}
    errors: dict[str, int] = {"get": 0, "post": 0}

    async def one(kind: str, data: bytes, scheduled: float) -> None:
        conn = None
        while idle:
            candidate = idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            _, conn = await loop.create_connection(_Conn, host, port)
        try:
            status = await conn.request(data)
        except ConnectionError:
            errors[kind] += 1
            return
        latencies[kind].append(loop.time() - scheduled)
        if not 200 <= status < 300:
            errors[kind] += 1
        if not conn.closed:
            idle.append(conn)

    total = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    start = loop.time() + 0.05
    tasks = []
    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        is_post = args.post_every > 0 and i % args.post_every == args.post_every - 1
        kind = "post" if is_post else "get"
        data = post_req(i) if is_post else get_req
        tasks.append(asyncio.create_task(one(kind, data, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    out: dict[str, object] = {
        "requests": total,
        "seconds": round(elapsed, 2),
        "achieved_rate": round(total / elapsed, 1),
    }
    for kind, values in latencies.items():
        out[kind] = {
            "count": len(values),
            "errors": errors[kind],
            "p50_ms": round(percentile(values, 50) * 1000, 2),
            "p99_ms": round(percentile(values, 99) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2) if values else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--batch-id", required=True)
    parser.add_argument("--template-id", required=True)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--post-every", type=int, default=5, help="1: only POSTs")
    parser.add_argument("--get-path", default="", help="default /api/v1/batches/BATCH_ID")
    parser.add_argument("--post-path", default="/api/v1/batches")
    parser.add_argument(
        "--post-body",
        choices=("batch", "email"),
        default="batch",
        help="a POST /batches body (one recipient) or a POST /emails body (one address)",
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
