"""The raw keep-alive pool (`transports/http1.py`) against a real socket server that answers
exact bytes: answers that end when the server closes, the cap on the body it keeps, the
query string, chosen addresses, keep-alive reuse and the read timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mailer.transports.http1 import HttpError, HttpPool


@dataclass
class RawServer:
    """Answers each request with `answer(request head)`; `close_after` closes after it."""

    answer: Callable[[bytes], bytes]
    close_after: bool = False
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.heads.append(head)
                writer.write(self.answer(head))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


MakeServer = Callable[..., Awaitable[RawServer]]


@pytest.fixture
async def raw() -> AsyncIterator[MakeServer]:
    servers: list[RawServer] = []

    async def make(answer: Callable[[bytes], bytes], close_after: bool = False) -> RawServer:
        server = await RawServer(answer, close_after).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


def _pool(url: str, **kwargs: Any) -> HttpPool:
    return HttpPool(url, 4, connect_timeout=5, read_timeout=5, **kwargs)


async def test_an_answer_without_length_ends_when_the_server_closes(raw: MakeServer) -> None:
    server = await raw(
        lambda _: b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", True
    )
    pool = _pool(f"http://127.0.0.1:{server.port}/hook")
    response = await pool.post({}, b"{}")
    assert (response.status, response.body) == (200, b"all of it")
    pool.close()


async def test_the_body_kept_is_capped_and_the_connection_not_reused(raw: MakeServer) -> None:
    big = b"x" * 1_000_000
    server = await raw(
        lambda _: b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % len(big) + big
    )
    pool = _pool(f"http://127.0.0.1:{server.port}/", body_limit=1024)
    first = await pool.post({}, b"1")
    second = await pool.post({}, b"2")
    assert first.status == second.status == 500
    assert first.body == second.body == b"x" * 1024
    assert server.connections == 2  # a cut answer closes its connection
    pool.close()


async def test_keep_alive_reuses_the_connection_and_sends_the_query(raw: MakeServer) -> None:
    server = await raw(lambda _: b"HTTP/1.1 204 No Content\r\n\r\n")
    pool = _pool(f"http://127.0.0.1:{server.port}/in/hook?token=a%20b&x=1")
    for _ in range(3):
        assert (await pool.post({"x-test": "1"}, b"{}")).status == 204
    assert server.connections == 1
    assert all(h.startswith(b"POST /in/hook?token=a%20b&x=1 HTTP/1.1\r\n") for h in server.heads)
    assert b"\r\nx-test: 1\r\n" in server.heads[0]
    pool.close()


async def test_resolve_chooses_the_address_and_host_stays_the_name(raw: MakeServer) -> None:
    server = await raw(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.2", "127.0.0.1"]  # nothing listens on the first: the next is tried

    pool = _pool(f"http://hooks.invalid:{server.port}/", resolve=resolve)
    assert (await pool.post({}, b"{}")).body == b"ok"
    assert asked == [("hooks.invalid", server.port)]
    assert f"\r\nHost: hooks.invalid:{server.port}\r\n".encode() in server.heads[0]
    pool.close()


async def test_a_refusing_resolver_stops_the_connection(raw: MakeServer) -> None:
    server = await raw(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async def refuse(host: str, port: int) -> list[str]:
        raise PermissionError(f"{host} refused")

    pool = _pool(f"http://127.0.0.1:{server.port}/", resolve=refuse)
    with pytest.raises(PermissionError):
        await pool.post({}, b"{}")
    assert server.connections == 0
    pool.close()


async def test_no_answer_in_time_is_a_timeout_and_a_cut_answer_an_error(raw: MakeServer) -> None:
    silent = await raw(lambda _: b"")
    pool = HttpPool(f"http://127.0.0.1:{silent.port}/", 2, connect_timeout=5, read_timeout=0.2)
    with pytest.raises(TimeoutError):
        await pool.post({}, b"{}")
    pool.close()
    cut = await raw(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True)
    pool = _pool(f"http://127.0.0.1:{cut.port}/")
    with pytest.raises(HttpError):
        await pool.post({}, b"{}")
    pool.close()


async def test_an_endless_header_section_is_refused(raw: MakeServer) -> None:
    header = b"X-Filler: " + b"y" * 1000 + b"\r\n"
    server = await raw(
        lambda _: b"HTTP/1.1 200 OK\r\n" + header * 100 + b"Content-Length: 0\r\n\r\n"
    )
    pool = _pool(f"http://127.0.0.1:{server.port}/")
    with pytest.raises(HttpError, match="headers larger than"):
        await pool.post({}, b"{}")
    pool.close()
