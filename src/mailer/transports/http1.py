"""A pool of keep-alive HTTP/1.1 connections to one URL for prebuilt POST requests, on a
raw asyncio protocol with httptools parsing the answers.

Measured on the benchmark machine, aiohttp costs ~0.25 ms of CPU per request (per-request
objects, a body-writer task, two writes); one prebuilt request written at once on a pooled
connection costs ~0.05 ms. Used by the SES transport for SendEmail and by the webhook
sender (with a connect-time address check and a cap on the answer's body it keeps).

A POST is never resent: a connection that breaks before the answer raises HttpError and the
caller's error policy decides (a request the server accepted but whose answer was lost must
not be sent again silently).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools
from botocore.httpsession import get_cert_path

from mailer.transports.base import Ready


class HttpError(OSError):
    """The connection broke or the answer could not be read (no response to classify)."""


MAX_HEADER_BYTES = 65536  # an answer's header section beyond this is refused

# (host, port) -> the addresses a new connection may go to, tried in order.
Resolve = Callable[[str, int], Awaitable[list[str]]]


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; filled for error answers (non-2xx) only
    body: bytes


def host_header(url: str) -> str:
    """The Host value an HTTP client sends (default ports omitted), as SigV4 signs it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, answer parsed by
    httptools (Content-Length, chunked, or until the server closes). With `body_limit`,
    an answer whose body grows past it is cut there and the connection closed."""

    def __init__(self, body_limit: int | None = None) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.idle_since = 0.0
        self.body_limit = body_limit
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._header_bytes = 0
        self._headers_done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed HTTP response: {exc}"))
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._fail(HttpError(f"answer headers larger than {MAX_HEADER_BYTES} bytes"))
            self.close()

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._size += len(body)
        if self.body_limit is not None and self._size > self.body_limit:
            self._respond()
            self.close()  # the rest of the body is not read

    def on_message_complete(self) -> None:
        self._respond()
        if not self.parser.should_keep_alive():
            self.close()

    def _respond(self) -> None:
        status = self.parser.get_status_code()
        headers = {}
        if not 200 <= status < 300:  # only error answers need their headers
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._headers}
        body = b"".join(self._body)
        if self.body_limit is not None:
            body = body[: self.body_limit]
        response = Response(status, headers, body)
        self._headers, self._body, self._size, self._headers_done = [], [], 0, False
        self._header_bytes = 0
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and self._headers_done and self._until_close():
            self._respond()  # an answer without a length ends when the server closes
            return
        self._fail(HttpError(f"connection closed before the answer ({exc!r})"))

    def _until_close(self) -> bool:
        names = {name.lower() for name, _ in self._headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def request(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one URL, at most `limit` at a time. Idle
    connections older than `idle_timeout` are not reused (servers close idle keep-alive
    connections; a request on one being closed would fail). TLS trusts `ssl_context` when
    given, else AWS_CA_BUNDLE when set, else botocore's bundle. `resolve`, when given,
    chooses the addresses a new connection goes to (TLS still checks the URL's host name);
    `body_limit` caps the answer's body that is read."""

    def __init__(
        self,
        url: str,
        limit: int,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Resolve | None = None,
        body_limit: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._head = f"POST {target} HTTP/1.1\r\nHost: {host_header(url)}\r\n".encode()
        self._ssl: ssl.SSLContext | None = None
        if self._tls:
            self._ssl = ssl_context or ssl.create_default_context(
                cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
            )
        self._limit = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._resolve = resolve
        self._body_limit = body_limit
        self.idle_timeout = 15.0
        self.last_used = 0.0  # monotonic time of the latest post()

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_timeout:
                return conn
            conn.close()
        return await asyncio.wait_for(self._connect(), self._connect_timeout)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        hosts = (
            [self._host] if self._resolve is None else await self._resolve(self._host, self._port)
        )
        error: OSError | None = None
        for host in hosts:
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._body_limit),
                    host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._tls else None,
                )
                return conn
            except OSError as exc:
                error = exc
        raise error or HttpError(f"no address to connect to for {self._host}")

    async def post(
        self, headers: Mapping[str, str], body: bytes, ready: Ready | None = None
    ) -> Response:
        """POST `body` with `headers` (Host and Content-Length are added). `ready` is awaited
        once a connection is held, just before the request is written."""
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        data = b"".join(
            (self._head, lines.encode(), b"Content-Length: %d\r\n\r\n" % len(body), body)
        )
        self.last_used = time.monotonic()
        async with self._limit:
            conn = await self._connection()
            if ready is not None:
                try:
                    await ready()
                except BaseException:
                    self._keep(conn)
                    raise
            waiter = conn.request(data)
            timer = asyncio.get_running_loop().call_later(
                self._read_timeout, _time_out, waiter, self._read_timeout
            )
            try:
                response = await waiter
            except BaseException:
                conn.close()  # the answer may still come: the connection cannot be reused
                raise
            finally:
                timer.cancel()
            self._keep(conn)
            return response

    def _keep(self, conn: _Connection) -> None:
        if not conn.closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _time_out(waiter: asyncio.Future[Response], after: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no answer within {after} s"))
