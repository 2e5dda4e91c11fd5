"""Fixtures of the security suite: one key in each state a request can present."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest

from mailer.auth import service as keys
from mailer.db import session_scope
from tests.fixtures.client import ApiClient
from tests.fixtures.dns_server import dns_server

__all__ = ["KeySet", "dns_server", "keyset"]


@dataclass(frozen=True)
class KeySet:
    admin: str
    send: str
    revoked: str  # was a valid admin key
    invalid: str  # well-formed, never issued

    def key(self, state: str) -> str | None:
        return None if state == "none" else str(getattr(self, state))

    def secrets(self) -> list[str]:
        return [self.admin, self.send, self.revoked, self.invalid]


@pytest.fixture
async def keyset(client: ApiClient) -> KeySet:
    async with session_scope(client.state.sessionmaker) as session:
        admin = await keys.create_key(session, "admin", admin=True)
        send = await keys.create_key(session, "send")
        revoked = await keys.create_key(session, "revoked", admin=True)
    async with session_scope(client.state.sessionmaker) as session:
        await keys.revoke_key(session, revoked.key.id)
    return KeySet(admin.secret, send.secret, revoked.secret, secrets.token_hex(32))
