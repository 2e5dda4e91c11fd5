"""Worker heartbeats: each worker upserts a `system_state` row (key worker:<id>) every
WORKER_DEAD_AFTER / 6 s (`delivery/liveness.py`) and removes it when it stops cleanly;
/metrics counts the recent ones.

A heartbeat also carries the worker's send count (`SentTally`): the messages it has recorded
as sent since it started, and the same count at one of its beats about RATE_WINDOW_S
earlier. A reader gets each worker's recent send rate from its one row (`worker_rates`);
nothing is written per message."""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.db import session_scope
from mailer.db.dialect import insert_for
from mailer.models import SystemState
from mailer.models.base import utcnow
from mailer.models.enums import RecipientStatus

WORKER_PREFIX = "worker:"
_KEY_MAX = 64  # system_state.key length
STALE_WORKER_S = 86_400.0  # heartbeat rows older than this are deleted
RATE_WINDOW_S = 60.0  # a worker's send rate is measured over about this long


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


class SentTally:
    """Messages this worker recorded as sent since it started (a `Recorder` observer: counted
    once their outcome is committed), and what its heartbeats say about them."""

    def __init__(self) -> None:
        self.sent = 0
        self._beats: deque[tuple[datetime, int]] = deque()

    def __call__(self, outcomes: Iterable[Any]) -> None:
        self.sent += sum(1 for o in outcomes if o.status == RecipientStatus.SENT)

    def beat(self, now: datetime) -> dict[str, Any]:
        """The heartbeat's fields: the count now, and at the newest earlier beat that is at
        least RATE_WINDOW_S old (the oldest one while the worker is younger than that)."""
        self._beats.append((now, self.sent))
        window_start = now - timedelta(seconds=RATE_WINDOW_S)
        while len(self._beats) > 1 and self._beats[1][0] <= window_start:
            self._beats.popleft()
        earlier_at, earlier = self._beats[0]
        return {
            "sent": self.sent,
            "sentAt": now.isoformat(),
            "earlierSent": earlier,
            "earlierAt": earlier_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class WorkerRate:
    worker_id: str
    seen_s: float  # seconds since its last heartbeat
    transport: str | None
    sent: int | None  # messages sent since it started (None: a worker that does not say)
    per_second: float | None  # its send rate over `window_s` (None: not known yet)
    window_s: float | None


def _rate(value: Mapping[str, Any]) -> tuple[int | None, float | None, float | None]:
    try:
        sent, earlier = int(value["sent"]), int(value["earlierSent"])
        seconds = (
            datetime.fromisoformat(value["sentAt"]) - datetime.fromisoformat(value["earlierAt"])
        ).total_seconds()
    except (KeyError, TypeError, ValueError):
        count = value.get("sent")
        return (count if isinstance(count, int) else None), None, None
    if seconds <= 0:
        return sent, None, None
    return sent, (sent - earlier) / seconds, seconds


async def worker_rates(
    session: AsyncSession, within_s: float, limit: int = 100
) -> list[WorkerRate]:
    """Workers whose heartbeat is at most `within_s` seconds old, with their send rates."""
    now = utcnow()
    rows = await session.execute(
        select(SystemState.key, SystemState.value, SystemState.updated_at)
        .where(
            SystemState.key.startswith(WORKER_PREFIX, autoescape=True),
            SystemState.updated_at >= now - timedelta(seconds=within_s),
        )
        .order_by(SystemState.key)
        .limit(limit)
    )
    out = []
    for key, value, updated_at in rows.tuples():
        info = value if isinstance(value, Mapping) else {}
        sent, per_second, window = _rate(info)
        transport = info.get("transport")
        out.append(
            WorkerRate(
                worker_id=key[len(WORKER_PREFIX) :],
                seen_s=max(0.0, (now - updated_at).total_seconds()),
                transport=transport if isinstance(transport, str) else None,
                sent=sent,
                per_second=per_second,
                window_s=window,
            )
        )
    return out
