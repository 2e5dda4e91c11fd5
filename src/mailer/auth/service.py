"""API key lifecycle and per-request authentication."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.auth import repository
from mailer.auth.cache import KeyCache, notify_revoked
from mailer.auth.keys import generate_key, hash_key
from mailer.auth.principal import Principal
from mailer.errors import NotFound
from mailer.models import ApiKey
from mailer.models.base import utcnow


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
        await notify_revoked(session, key.id)
    return key


async def list_keys(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[Sequence[ApiKey], int]:
    return await repository.list_keys(session, limit=limit, offset=offset)


async def authenticate(
    session: AsyncSession, presented: str, cache: KeyCache | None = None
) -> Principal | None:
    """The key's principal, or None if unknown or revoked.

    Lookup is by SHA-256 of the presented key (an indexed equality on a hash of a 256-bit
    secret, so timing reveals nothing useful); the stored hash is then compared in
    constant time as well. With a `cache`, a key found valid is remembered until a
    revocation is announced (see auth/cache.py); unknown and revoked keys are never cached.
    """
    digest = hash_key(presented)
    if cache is not None:
        cached = cache.get(digest)
        if cached is not None:
            return cached
        generation = cache.generation
    key = await repository.get_by_hash(session, digest)
    if key is None or not hmac.compare_digest(key.key_hash, digest) or key.revoked_at is not None:
        return None
    principal = Principal(key_id=key.id, name=key.name, scopes=key.scope_set)
    if cache is not None:
        cache.put(digest, principal, generation)
    return principal
