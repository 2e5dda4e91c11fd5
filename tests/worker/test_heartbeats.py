"""Worker heartbeats: the upsert, counting recent ones, forgetting a worker, pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.db import session_scope
from mailer.models import SystemState
from mailer.worker.heartbeats import (
    STALE_WORKER_S,
    default_worker_id,
    forget_worker,
    worker_heartbeat,
    workers_alive,
)

Maker = async_sessionmaker[AsyncSession]


async def test_worker_heartbeats(sessionmaker: Maker) -> None:
    async with session_scope(sessionmaker) as session:
        await worker_heartbeat(session, "host-a:1", {"transport": "ses", "started": "t0"})
        await worker_heartbeat(session, "host-b:2", {"transport": "smtp"})
    async with session_scope(sessionmaker) as session:  # a second beat updates, not adds
        await worker_heartbeat(session, "host-a:1", {"transport": "ses", "started": "t1"})
    async with sessionmaker() as session:
        assert await workers_alive(session, 60) == 2
        value = await session.scalar(
            SystemState.__table__.select()
            .with_only_columns(SystemState.value)
            .where(SystemState.key == "worker:host-a:1")
        )
        assert value == {"transport": "ses", "started": "t1"}

    async with session_scope(sessionmaker) as session:  # host-b went quiet 10 minutes ago
        await session.execute(
            update(SystemState)
            .where(SystemState.key == "worker:host-b:2")
            .values(updated_at=datetime.now(UTC) - timedelta(minutes=10))
        )
    async with sessionmaker() as session:
        assert await workers_alive(session, 60) == 1
        assert await workers_alive(session, 3600) == 2

    async with session_scope(sessionmaker) as session:
        await forget_worker(session, "host-a:1")
    async with sessionmaker() as session:
        assert await workers_alive(session, 3600) == 1

    async with session_scope(sessionmaker) as session:  # silent for over a day: pruned
        await session.execute(
            update(SystemState)
            .where(SystemState.key == "worker:host-b:2")
            .values(updated_at=datetime.now(UTC) - timedelta(seconds=STALE_WORKER_S + 60))
        )
        await worker_heartbeat(session, "host-c:3", {})
    async with sessionmaker() as session:
        keys = set(
            await session.scalars(SystemState.__table__.select().with_only_columns(SystemState.key))
        )
    assert keys == {"worker:host-c:3"}


def test_default_worker_id_fits_the_key_column() -> None:
    ident = default_worker_id()
    assert ident.endswith(f":{__import__('os').getpid()}")
    assert len("worker:" + ident) <= 64
