"""Queries on api_keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import ApiKey


async def get_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    result = await session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash))
    return result.first()


async def get(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def list_keys(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[Sequence[ApiKey], int]:
    total = await session.scalar(select(func.count()).select_from(ApiKey))
    rows = await session.scalars(
        select(ApiKey)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return rows.all(), int(total or 0)


async def add_usage(session: AsyncSession, key_id: str, count: int, last_used: datetime) -> None:
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(usage_count=ApiKey.usage_count + count, last_used_at=last_used)
    )
