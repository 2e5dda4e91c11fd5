"""The delivery limit: a bare asyncio HTTP client (aiohttp, pooled keep-alive connections)
sending SES SendEmail requests to the mock at a fixed concurrency, no database, no queue.

    python bench/bare_client.py --url http://127.0.0.1:PORT --count 100000 --concurrency 256

Prints one JSON line: sent, seconds, per_second, cpu_ms_per_request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import aiohttp
import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

HTML = "<html><body><p>" + "This paragraph stands for a typical message body. " * 14 + "</p>"


def request_body(i: int) -> bytes:
    return orjson.dumps(
        {
            "FromEmailAddress": "Bench <bench@example.com>",
            "Destination": {"ToAddresses": [f"bare{i}@example.com"]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": f"Welcome, User {i}!", "Charset": "UTF-8"},
                    "Body": {
                        "Text": {"Data": HTML, "Charset": "UTF-8"},
                        "Html": {"Data": HTML, "Charset": "UTF-8"},
                    },
                    "Headers": [
                        {"Name": "List-Unsubscribe", "Value": "<https://x.example/u/t>"},
                        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
                    ],
                }
            },
            "EmailTags": [{"Name": "mailer_batch", "Value": "bare"}],
        }
    )


async def run(url: str, count: int, concurrency: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    endpoint = f"{url}/v2/email/outbound-emails"
    headers = {"Content-Type": "application/json"}
    next_index = 0
    sent = 0
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one_lane() -> None:
            nonlocal next_index, sent
            while next_index < count:
                i = next_index
                next_index += 1
                async with http.post(endpoint, data=request_body(i), headers=headers) as r:
                    payload = await r.read()
                    if r.status == 200 and b"MessageId" in payload:
                        sent += 1

        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(one_lane() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return {
        "sent": sent,
        "seconds": round(seconds, 3),
        "per_second": round(sent / seconds, 1),
        "cpu_ms_per_request": round(cpu * 1000 / max(sent, 1), 4),
        "pid": os.getpid(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--uvloop", action="store_true", help="(the worker runs plain asyncio)")
    args = parser.parse_args()
    if args.uvloop and uvloop is not None:
        uvloop.install()
    print(json.dumps(asyncio.run(run(args.url, args.count, args.concurrency))))


if __name__ == "__main__":
    main()
