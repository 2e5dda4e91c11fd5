"""Bodies over MAX_BODY_BYTES (1 MiB here) get 413 before the server reads them whole:
spoken over a raw socket to a real `mailer api`, so the test sees when the answer comes."""

from __future__ import annotations

import select
import socket
from urllib.parse import urlsplit

import pytest

from tests.badinput.conftest import LiveApi

LIMIT = 1024 * 1024
CHUNK = 64 * 1024


def _connect(live_api: LiveApi) -> socket.socket:
    url = urlsplit(live_api.url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
    return sock


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    return data


def _stream_until_answered(sock: socket.socket, chunked: bool, total: int) -> tuple[int, bytes]:
    """Send up to `total` body bytes; stop as soon as the server answers. Returns how many
    body bytes were sent before the answer, and the answer."""
    sent = 0
    block = b"x" * CHUNK
    while sent < total:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sent, _answer(sock)
        frame = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
        try:
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(block)
    return sent, _answer(sock)


@pytest.mark.parametrize("path", ["/api/v1/batches", "/api/v1/templates", "/api/v1/webhooks/ses"])
def test_declared_length_over_the_limit_is_refused_at_once(live_api: LiveApi, path: str) -> None:
    with _connect(live_api) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {live_api.admin}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {50 * LIMIT}\r\n\r\n"
        )
        sock.sendall(head.encode())
        sent, answer = _stream_until_answered(sock, chunked=False, total=50 * LIMIT)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert sent < 50 * LIMIT  # answered long before the declared body was sent
    assert b"payload_too_large" in answer or b"413" in answer


@pytest.mark.parametrize("path", ["/api/v1/batches", "/api/v1/templates"])
def test_streamed_body_over_the_limit_is_refused_while_streaming(
    live_api: LiveApi, path: str
) -> None:
    """No Content-Length (chunked): the server counts while reading and answers 413 once past
    the limit, before the client is done."""
    total = 40 * LIMIT
    with _connect(live_api) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {live_api.admin}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        sent, answer = _stream_until_answered(sock, chunked=True, total=total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert sent < total


def test_body_just_under_the_limit_is_read(live_api: LiveApi) -> None:
    body = b'{"name": "' + b"x" * (LIMIT - 100) + b'", "text": "t"}'
    with _connect(live_api) as sock:
        head = (
            f"POST /api/v1/templates HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {live_api.admin}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 422"), answer[:300]  # read and validated: name too long
