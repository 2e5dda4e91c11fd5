"""bench/bodies: the API's peak memory for hostile request bodies: one request each to a
`mailer api` (PostgreSQL + Redis) started afresh for each, its answer, and the API
process's peak RSS growth while it is handled (sampled every 20 ms), against an honest
100k-recipient batch.

    bench/bodies
    bench/bodies --mb 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Proc,
    Sampler,
    Stack,
    batch_body,
    busy_neighbours,
    machine,
    mb,
    print_table,
    recipients,
    write_results,
)


def empty_objects(size: int, prefix: bytes = b"[", suffix: bytes = b"]") -> bytes:
    count = (size - len(prefix) - len(suffix)) // 3
    return prefix + b",".join([b"{}"] * count) + suffix


def raw_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[str, int]:
    """POST over a plain socket, watching for an answer while sending (an HTTP client
    sees only a reset when the server answers early and closes). Returns the status line
    and how many body bytes were sent before it came."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80)) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
        sock.sendall(head.encode())
        sent = 0
        view = memoryview(body)
        while sent < len(body):
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sent += sock.send(view[sent : sent + 65536])
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), sent


async def measure(
    api: Proc, url: str, path: str, body: bytes, headers: dict[str, str]
) -> dict[str, Any]:
    with Sampler({"api": api}, interval=0.02) as sampler:
        started = time.perf_counter()
        status_line, sent = await asyncio.to_thread(raw_post, url, path, body, headers)
        status = status_line.split(" ", 2)[1] if status_line.count(" ") >= 1 else status_line
        elapsed = time.perf_counter() - started
        await asyncio.sleep(1.0)  # the sampler sees what is freed after the answer
    start = sampler.start_rss["api"]
    peak = sampler.peak_rss["api"]
    return {
        "status": status,
        "body_mb_sent_before_the_answer": mb(sent),
        "seconds": round(elapsed, 2),
        "start_mb": mb(start),
        "peak_mb": mb(peak),
        "growth_mb": mb(max(0, peak - start)),
        "growth_per_body_byte": round(max(0, peak - start) / len(body), 2),
    }


def start_api(stack: Stack, env: dict[str, str], attempts: int = 3) -> Proc:
    """start_api, again when a loaded machine makes the start slower than its 30 s."""
    for attempt in range(attempts):
        try:
            return stack.start_api(**env)
        except RuntimeError:
            stack.stop_all()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


async def main_async(args: argparse.Namespace) -> int:
    size = args.mb * 2**20
    stack = Stack("bodies")
    neighbours = busy_neighbours()
    try:
        await stack.create()
        env = {
            "MAX_BODY_BYTES": str(size + 2**20),
            "SNS_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:bench",
        }
        api = start_api(stack, env)
        template_id = await stack.create_template()
        api.stop()
        stack.procs.remove(api)
        keyed = stack.headers()
        anonymous = {"Content-Type": "application/json"}
        sns = {"Content-Type": "text/plain; charset=UTF-8"}
        cases = [
            (
                f"{args.mb} MB [{{}},…] POST /batches, valid key",
                "/api/v1/batches",
                empty_objects(size),
                keyed,
            ),
            (
                f"{args.mb} MB {{recipients:[{{}},…]}} POST /batches, valid key",
                "/api/v1/batches",
                empty_objects(
                    size, b'{"template_id":"%s","recipients":[' % template_id.encode(), b"]}"
                ),
                keyed,
            ),
            (
                f"{args.mb} MB [{{}},…] POST /templates, no key",
                "/api/v1/templates",
                empty_objects(size),
                anonymous,
            ),
            (
                "15 MB [{},…] POST /templates (under its limit), no key",
                "/api/v1/templates",
                empty_objects(15 * 2**20),
                anonymous,
            ),
            (
                "30 MB POST /webhooks/ses (no key there)",
                "/api/v1/webhooks/ses",
                empty_objects(30 * 2**20, b'{"Type":"Notification","x":[', b"]}"),
                sns,
            ),
            (
                "honest batch: 100k recipients",
                "/api/v1/batches",
                batch_body(template_id, recipients(100_000)),
                keyed,
            ),
        ]
        results = {}
        for name, path, body, headers in cases:
            # A fresh process each: memory freed by one request is not returned to the OS.
            api = start_api(stack, env)
            result = await measure(api, stack.api_url, path, body, headers)
            api.stop()
            stack.procs.remove(api)
            results[name] = {"body_mb": mb(len(body)), **result}
            print(name, results[name], flush=True)
        rows = []
        for name, r in results.items():
            rows.append((f"{name}: answer", str(r["status"]), "", None))
            rows.append((f"{name}: RSS growth MB", r["growth_mb"], "", None))
        print_table("API peak RSS growth per request", rows)
        write_results(
            "bodies",
            {"machine": machine(), "busy_neighbours": neighbours, "results": results},
        )
    finally:
        await stack.drop()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=64, help="size of the hostile bodies")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
