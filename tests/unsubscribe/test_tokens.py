"""Unsubscribe tokens."""

from __future__ import annotations

import base64

import pytest

from mailer.unsubscribe.tokens import make_token, read_token

KEY = b"k" * 32
OTHER = b"o" * 32


@pytest.mark.parametrize("recipient_id", [0, 1, 42, 2**31, 2**63 - 1])
def test_roundtrip(recipient_id: int) -> None:
    token = make_token(recipient_id, KEY)
    assert read_token(token, KEY) == recipient_id
    assert len(token) == 33
    assert token.startswith("1")
    assert all(c.isalnum() or c in "-_" for c in token)


def test_opaque_and_deterministic() -> None:
    assert make_token(7, KEY) == make_token(7, KEY)
    assert make_token(7, KEY) != make_token(8, KEY)
    assert make_token(7, KEY) != make_token(7, OTHER)
    assert "7" not in make_token(7, KEY)[1:3]  # the id is not spelled out in decimal


def test_wrong_key_and_rotation() -> None:
    token = make_token(5, OTHER)
    assert read_token(token, KEY) is None
    assert read_token(token, KEY, old_keys=[OTHER]) == 5
    assert read_token(token, KEY, old_keys=[b""]) is None


def test_tampering() -> None:
    token = make_token(1234, KEY)
    raw = bytearray(base64.urlsafe_b64decode(token[1:]))
    for index in (0, 7, 8, len(raw) - 1):  # the id, and the MAC
        changed = bytearray(raw)
        changed[index] ^= 1
        forged = "1" + base64.urlsafe_b64encode(bytes(changed)).decode()
        assert read_token(forged, KEY) is None
    assert read_token("2" + token[1:], KEY) is None  # unknown version


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "1",
        "1" + "A" * 32,
        "x" * 33,
        "1" + "=" * 32,
        "1" + "+" * 32,
        "1" + "é" * 32,
        " " + "A" * 32,
    ],
)
def test_garbage(garbage: str) -> None:
    assert read_token(garbage, KEY) is None


def test_not_a_string_and_bad_input() -> None:
    assert read_token(None, KEY) is None  # type: ignore[arg-type]
    assert read_token(make_token(3, KEY) + "x", KEY) is None
    with pytest.raises(ValueError, match="range"):
        make_token(-1, KEY)
    with pytest.raises(ValueError, match="range"):
        make_token(2**63, KEY)
    with pytest.raises(ValueError, match="key"):
        make_token(1, b"")
