"""Identifiers: short, URL-safe, roughly time-ordered (like ULIDs, lowercase)."""

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id() -> str:
    """26 characters: 48 bits of milliseconds then 80 random bits."""
    return _b32(time.time_ns() // 1_000_000, 10) + _b32(secrets.randbits(80), 16)
