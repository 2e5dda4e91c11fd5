from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.models import ApiKey


async def test_database_roundtrip(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker() as session:
        session.add(ApiKey(name="k", key_hash="a" * 64, prefix="aaaaaaaa", scopes="send"))
        await session.commit()
    async with sessionmaker() as session:
        keys = (await session.scalars(select(ApiKey))).all()
    assert [k.name for k in keys] == ["k"]
    assert keys[0].created_at.tzinfo is not None
