"""A mock SES v2 endpoint fast enough not to be the bottleneck of a benchmark.

    python bench/mock_ses.py --port 8025 --latency 0.03 [--throttle-rate 200]
        [--throttle-fraction 0.01] [--error-fraction 0.01] [--max-send-rate 14]
        [--watch-prefix urgent]

Raw asyncio protocol + httptools on uvloop (about 30 µs of CPU a request): keep-alive
HTTP/1.1, no auth check (any SigV4 header is accepted). Routes:
    POST /v2/email/outbound-emails  SendEmail: answers {"MessageId": ...} after --latency s;
                                    429 TooManyRequestsException above --throttle-rate sends
                                    in the current second or for --throttle-fraction of sends;
                                    500 InternalFailure for --error-fraction.
    GET  /v2/email/account          GetAccount with SendQuota.MaxSendRate (--max-send-rate)
    POST /hooks                     a webhook receiver (bench/webhooks): 200 after --latency s;
                                    counted like sends, duplicates by the webhook-id header
    GET  /_bench/stats              accepted sends per wall-clock second, the busiest second
                                    and sliding 1-second window, duplicates (same To twice),
                                    throttled, errors, first/last arrival; `watched`: the
                                    arrival time of each address starting with --watch-prefix
    POST /_bench/reset              forget everything counted
Error answers use the rest-json form botocore parses (header x-amzn-ErrorType).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any

import httptools
import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.arrivals: list[float] = []  # accepted sends, time.time()
        self.per_second: Counter[int] = Counter()
        self.seen: set[str] = set()
        self.duplicates = 0
        self.throttled = 0
        self.errors = 0
        self.bad_requests = 0
        self.requests = 0
        self.watched: dict[str, float] = {}  # address -> time.time() of its arrival

    def summary(self) -> dict[str, Any]:
        arrivals = self.arrivals
        busiest_sliding = 0
        for i, start in enumerate(arrivals):
            j = bisect.bisect_left(arrivals, start + 1.0, lo=i)
            busiest_sliding = max(busiest_sliding, j - i)
        full = dict(sorted(self.per_second.items()))
        return {
            "accepted": len(arrivals),
            "requests": self.requests,
            "unique_recipients": len(self.seen),
            "duplicates": self.duplicates,
            "throttled": self.throttled,
            "errors": self.errors,
            "bad_requests": self.bad_requests,
            "first": arrivals[0] if arrivals else None,
            "last": arrivals[-1] if arrivals else None,
            "busiest_second": max(full.values()) if full else 0,
            "busiest_sliding_1s": busiest_sliding,
            "per_second": {str(k): v for k, v in full.items()},
            "watched": self.watched,
        }


class Config:
    latency = 0.03
    throttle_rate = 0
    throttle_fraction = 0.0
    error_fraction = 0.0
    max_send_rate = -1.0
    watch_prefix = ""


STATS = Stats()
CONFIG = Config()
_CT = b"Content-Type: application/json\r\n"


def _response(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\n"
        + _CT
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _error(status: bytes, code: str, message: str) -> bytes:
    body = orjson.dumps({"message": message})
    return _response(status, body, b"x-amzn-ErrorType: " + code.encode() + b"\r\n")


class HttpProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.webhook_id = b""
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.webhook_id = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"webhook-id":
            self.webhook_id = value

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if method == b"POST" and path == b"/v2/email/outbound-emails":
            self.send_email(b"".join(self.body))
        elif method == b"POST" and path == b"/hooks":
            self.receive_webhook()
        elif method == b"GET" and path == b"/v2/email/account":
            quota = {
                "Max24HourSend": -1.0,
                "MaxSendRate": CONFIG.max_send_rate,
                "SentLast24Hours": float(len(STATS.arrivals)),
            }
            body = {"SendQuota": quota, "SendingEnabled": True, "ProductionAccessEnabled": True}
            self.write(_response(b"200 OK", orjson.dumps(body)))
        elif path == b"/_bench/stats":
            self.write(_response(b"200 OK", orjson.dumps(STATS.summary())))
        elif path == b"/_bench/reset":
            STATS.reset()
            self.write(_response(b"200 OK", b"{}"))
        else:
            self.write(_error(b"404 Not Found", "NotFoundException", "no such route"))

    def send_email(self, raw: bytes) -> None:
        stats = STATS
        stats.requests += 1
        now = time.time()
        second = int(now)
        try:
            request = orjson.loads(raw)
            to = request["Destination"]["ToAddresses"][0]
            content = request["Content"]
            if "Simple" not in content and "Raw" not in content:
                raise KeyError("Content")
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            stats.bad_requests += 1
            self.later(_error(b"400 Bad Request", "BadRequestException", "malformed request"))
            return
        if (CONFIG.throttle_rate and stats.per_second[second] >= CONFIG.throttle_rate) or (
            CONFIG.throttle_fraction and random.random() < CONFIG.throttle_fraction
        ):
            stats.throttled += 1
            self.later(
                _error(
                    b"429 Too Many Requests",
                    "TooManyRequestsException",
                    "Maximum sending rate exceeded.",
                )
            )
            return
        if CONFIG.error_fraction and random.random() < CONFIG.error_fraction:
            stats.errors += 1
            self.later(_error(b"500 Internal Server Error", "InternalFailure", "internal"))
            return
        stats.arrivals.append(now)
        stats.per_second[second] += 1
        if CONFIG.watch_prefix and to.startswith(CONFIG.watch_prefix):
            stats.watched[to] = now
        if to in stats.seen:
            stats.duplicates += 1
        else:
            stats.seen.add(to)
        message_id = f"0100{uuid.uuid4().hex}-000000"
        self.later(
            _response(
                b"200 OK",
                b'{"MessageId":"' + message_id.encode() + b'"}',
                b"x-amzn-RequestId: " + message_id[4:40].encode() + b"\r\n",
            )
        )

    def receive_webhook(self) -> None:
        stats = STATS
        stats.requests += 1
        now = time.time()
        stats.arrivals.append(now)
        stats.per_second[int(now)] += 1
        key = self.webhook_id.decode()
        if key in stats.seen:
            stats.duplicates += 1
        else:
            stats.seen.add(key)
        self.later(_response(b"200 OK", b"{}"))

    def later(self, data: bytes) -> None:
        if CONFIG.latency > 0:
            self.loop.call_later(CONFIG.latency, self.write, data)
        else:
            self.write(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, host, port, backlog=4096)
    actual = server.sockets[0].getsockname()[1]
    print(f"mock SES listening on http://{host}:{actual}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.03, help="seconds before answering")
    parser.add_argument("--throttle-rate", type=int, default=0, help="429 above N sends/s")
    parser.add_argument("--throttle-fraction", type=float, default=0.0)
    parser.add_argument("--error-fraction", type=float, default=0.0)
    parser.add_argument("--max-send-rate", type=float, default=-1.0, help="GetAccount answer")
    parser.add_argument("--watch-prefix", default="", help="record arrivals of these addresses")
    args = parser.parse_args(argv)
    CONFIG.latency = args.latency
    CONFIG.throttle_rate = args.throttle_rate
    CONFIG.throttle_fraction = args.throttle_fraction
    CONFIG.error_fraction = args.error_fraction
    CONFIG.max_send_rate = args.max_send_rate
    CONFIG.watch_prefix = args.watch_prefix
    if uvloop is not None:
        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
