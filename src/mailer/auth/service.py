"""API key lifecycle and per-request authentication."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.auth import repository
from mailer.auth.keys import generate_key, hash_key
from mailer.errors import NotFound
from mailer.models import ApiKey
from mailer.models.base import utcnow
from mailer.models.enums import Scope


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    key_id: str
    name: str
    scopes: frozenset[str]

    def has(self, scope: Scope) -> bool:
        return scope.value in self.scopes or Scope.ADMIN.value in self.scopes


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str


def scopes_for(admin: bool) -> str:
    return "admin,send" if admin else "send"


async def create_key(session: AsyncSession, name: str, *, admin: bool = False) -> CreatedKey:
    secret = generate_key()
    key = ApiKey(
        name=name,
        key_hash=hash_key(secret),
        prefix=secret[:8],
        scopes=scopes_for(admin),
        usage_count=0,
        created_at=utcnow(),
    )
    session.add(key)
    await session.flush()
    return CreatedKey(key=key, secret=secret)


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey:
    key = await repository.get(session, key_id)
    if key is None:
        raise NotFound(f"API key {key_id!r} does not exist.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key


async def list_keys(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[Sequence[ApiKey], int]:
    return await repository.list_keys(session, limit=limit, offset=offset)


async def authenticate(session: AsyncSession, presented: str) -> Principal | None:
    """The key's principal, or None if unknown or revoked.

    Lookup is by SHA-256 of the presented key (an indexed equality on a hash of a 256-bit
    secret, so timing reveals nothing useful); the stored hash is then compared in
    constant time as well.
    """
    import hmac

    digest = hash_key(presented)
    key = await repository.get_by_hash(session, digest)
    if key is None or not hmac.compare_digest(key.key_hash, digest) or key.revoked_at is not None:
        return None
    return Principal(key_id=key.id, name=key.name, scopes=key.scope_set)
