"""Worker heartbeats: each worker upserts a `system_state` row (key worker:<id>) every
reconcile interval and removes it when it stops cleanly; /metrics counts the recent ones."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.db import session_scope
from mailer.db.dialect import insert_for
from mailer.models import SystemState
from mailer.models.base import utcnow

WORKER_PREFIX = "worker:"
_KEY_MAX = 64  # system_state.key length
STALE_WORKER_S = 86_400.0  # heartbeat rows older than this are deleted


def default_worker_id() -> str:
    """hostname:pid, cut from the left if needed (a pod name's unique part is its tail)."""
    ident = f"{socket.gethostname()}:{os.getpid()}"
    return ident[-(_KEY_MAX - len(WORKER_PREFIX)) :]


def _worker_key(worker_id: str) -> str:
    return (WORKER_PREFIX + worker_id)[:_KEY_MAX]


async def worker_heartbeat(session: AsyncSession, worker_id: str, info: Mapping[str, Any]) -> None:
    """Upsert this worker's row (key worker:<id>, value `info`, updated_at now) and delete
    rows of workers silent for a day. The caller commits."""
    now = utcnow()
    row = {"key": _worker_key(worker_id), "value": dict(info), "updated_at": now}
    upsert = insert_for(session, SystemState).values(row)
    await session.execute(
        upsert.on_conflict_do_update(
            index_elements=[SystemState.key],
            set_={"value": upsert.excluded.value, "updated_at": upsert.excluded.updated_at},
        )
    )
    await session.execute(
        delete(SystemState).where(
            SystemState.key.startswith(WORKER_PREFIX, autoescape=True),
            SystemState.updated_at < now - timedelta(seconds=STALE_WORKER_S),
        )
    )


async def heartbeat(
    sessionmaker: async_sessionmaker[AsyncSession], worker_id: str, info: Mapping[str, Any]
) -> None:
    """worker_heartbeat in its own transaction (what the worker loop calls)."""
    async with session_scope(sessionmaker) as session:
        await worker_heartbeat(session, worker_id, info)


async def forget_worker(session: AsyncSession, worker_id: str) -> None:
    """A worker stopping cleanly removes its row, so it stops counting at once."""
    await session.execute(delete(SystemState).where(SystemState.key == _worker_key(worker_id)))


async def workers_alive(session: AsyncSession, within_s: float) -> int:
    """Workers whose heartbeat is at most `within_s` seconds old."""
    cutoff = utcnow() - timedelta(seconds=within_s)
    n = await session.scalar(
        select(func.count())
        .select_from(SystemState)
        .where(
            SystemState.key.startswith(WORKER_PREFIX, autoescape=True),
            SystemState.updated_at >= cutoff,
        )
    )
    return int(n or 0)
