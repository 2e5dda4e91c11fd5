"""Read sessions run without a transaction: on SQLite a reader never takes the write lock,
so reads do not wait behind a writer and a writer does not wait behind a slow reader."""

from __future__ import annotations

import asyncio

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mailer.db import create_read_sessionmaker, session_scope
from mailer.models import Template
from mailer.models.base import utcnow


async def test_a_read_session_holds_no_transaction_between_statements(
    engine: AsyncEngine,
) -> None:
    reads = create_read_sessionmaker(engine)
    async with reads() as session:
        await session.execute(select(Template.id).limit(1))
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        if engine.dialect.name == "sqlite":
            # aiosqlite's connection wraps sqlite3's: no BEGIN was issued.
            assert not driver._conn.in_transaction  # type: ignore[union-attr]
        else:
            assert not driver.is_in_transaction()  # type: ignore[union-attr]


async def test_a_writer_commits_while_a_read_session_is_open(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    reads = create_read_sessionmaker(engine)
    async with reads() as reader:
        await reader.execute(text("SELECT 1"))
        # The read session stays open (a slow request) while a write transaction runs:
        # with BEGIN IMMEDIATE on the reader, this write would wait for the busy timeout.
        async with session_scope(sessionmaker) as writer:
            now = utcnow()
            writer.add(Template(name="t", version_count=0, created_at=now, updated_at=now))
        found = await reader.scalar(select(Template.name).where(Template.name == "t"))
    assert found == "t"  # each statement of a read session sees the latest commit


async def test_a_reader_is_not_held_up_by_an_open_write_transaction(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    reads = create_read_sessionmaker(engine)
    async with session_scope(sessionmaker) as writer:
        now = utcnow()
        writer.add(Template(name="pending", version_count=0, created_at=now, updated_at=now))
        await writer.flush()  # the write lock is held until this block ends
        async with reads() as reader:
            seen = await asyncio.wait_for(
                reader.scalar(select(Template.name).where(Template.name == "pending")), 20
            )
    assert seen is None  # uncommitted work is not visible
