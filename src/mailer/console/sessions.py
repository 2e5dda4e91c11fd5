"""Console sign-in: server-side sessions keyed by a random cookie token.

The cookie carries 256 random bits; the table holds only their SHA-256, so reading the
table signs no one in. A session ends at logout, after IDLE without a request, at ABSOLUTE
after sign-in, or on the first request after its API key is revoked (every request reads the
key's row along with the session's)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.auth.keys import hash_key
from mailer.auth.service import authenticate
from mailer.console import repository
from mailer.models import ConsoleSession
from mailer.models.base import utcnow
from mailer.models.enums import Scope

COOKIE = "mailer_console"
IDLE = timedelta(hours=2)
ABSOLUTE = timedelta(hours=12)
# last_seen_at is written at most this often: a page view is not a write.
TOUCH_EVERY = timedelta(minutes=1)


class LoginRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    session_id: str
    key_id: str
    key_name: str
    key_prefix: str
    csrf_token: str

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            self.csrf_token.encode(), presented.encode()
        )


def _digest(token: str) -> str:
    return hash_key(token)


async def sign_in(session: AsyncSession, secret: str) -> str:
    """A new session for an admin key; the cookie token. LoginRefused otherwise."""
    principal = await authenticate(session, secret.strip())
    if principal is None:
        raise LoginRefused("That API key is not valid, or it has been revoked.")
    if Scope.ADMIN.value not in principal.scopes:
        raise LoginRefused(
            "This API key has the send scope only. The console needs an admin key "
            "(create one with `mailer keys create NAME --admin`)."
        )
    token = secrets.token_urlsafe(32)
    now = utcnow()
    await repository.insert_session(
        session,
        ConsoleSession(
            id=_digest(token),
            api_key_id=principal.key_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + ABSOLUTE,
        ),
    )
    return token


async def load(session: AsyncSession, token: str | None) -> ConsoleUser | None:
    """The signed-in user of a cookie token, or None (and the dead session deleted)."""
    if not token or len(token) > 128:
        return None
    session_id = _digest(token)
    found = await repository.session_with_key(session, session_id)
    if found is None:
        return None
    row, key = found
    now = utcnow()
    alive = (
        key.revoked_at is None
        and Scope.ADMIN.value in key.scope_set
        and now < row.expires_at
        and now - row.last_seen_at < IDLE
    )
    if not alive:
        await repository.delete_session(session, session_id)
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        await repository.touch_session(session, session_id, now)
    return ConsoleUser(
        session_id=session_id,
        key_id=key.id,
        key_name=key.name,
        key_prefix=key.prefix,
        csrf_token=row.csrf_token,
    )


async def sign_out(session: AsyncSession, user: ConsoleUser) -> None:
    await repository.delete_session(session, user.session_id)


async def end_sessions_of_key(session: AsyncSession, key_id: str) -> None:
    await repository.delete_sessions_of_key(session, key_id)
