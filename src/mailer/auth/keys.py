"""API key material: generation, hashing, constant-time comparison."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def generate_key() -> str:
    """64 lowercase hex characters: 256 random bits."""
    return secrets.token_hex(32)


def hash_key(key: str) -> str:
    # High-entropy keys need no slow hash: SHA-256 is enough and keeps auth cheap.
    return hashlib.sha256(key.encode()).hexdigest()


def keys_match(stored_hash: str, presented: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_key(presented))
