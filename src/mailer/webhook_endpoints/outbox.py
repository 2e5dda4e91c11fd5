"""Writing events to the outbox, in the caller's transaction (the one that made the change).

Every writer of events calls in here with the rows it records: `record_events` for most,
the recorder's and the batch ingest's one-statement PostgreSQL paths for theirs. Nothing is
done per event unless an enabled endpoint exists: the enabled endpoints and their filters
are cached per database engine for CACHE_SECONDS (a change made through this process's
API or CLI is seen at once, one made by another process within CACHE_SECONDS).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.ids import new_id
from mailer.models.base import utcnow
from mailer.models.webhook_endpoint import DeliveryState
from mailer.webhook_endpoints import catalog, repository

CACHE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class _Snapshot:
    loaded_at: float
    # (endpoint id, the types it takes; None = every type)
    endpoints: tuple[tuple[str, frozenset[str] | None], ...]


_cache: weakref.WeakKeyDictionary[Engine, _Snapshot] = weakref.WeakKeyDictionary()


def invalidate() -> None:
    """Forget the cached endpoints (called after this process changes one)."""
    _cache.clear()


# One unit of work sees one list of endpoints: the choice it made on it (one statement
# without a transaction, or a transaction for its outbox rows) holds to its end.
_SESSION_KEY = "mailer.webhook_endpoints"


async def _endpoints(session: AsyncSession) -> tuple[tuple[str, frozenset[str] | None], ...]:
    seen: tuple[tuple[str, frozenset[str] | None], ...] | None = session.info.get(_SESSION_KEY)
    if seen is not None:
        return seen
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    snapshot = _cache.get(engine)
    now = time.monotonic()
    if snapshot is None or now - snapshot.loaded_at > CACHE_SECONDS:
        rows = await repository.subscriptions(session)
        snapshot = _Snapshot(
            now, tuple((eid, frozenset(types) if types else None) for eid, types in rows)
        )
        _cache[engine] = snapshot
    session.info[_SESSION_KEY] = snapshot.endpoints
    return snapshot.endpoints


async def any_enabled(session: AsyncSession) -> bool:
    """Whether an enabled endpoint exists (cached as the event writes see it): then a unit
    of work may write outbox rows beside its own, and is no longer one statement."""
    return bool(await _endpoints(session))


def new_event_id() -> str:
    return "msg_" + new_id()


def _row(
    event_id: str,
    endpoint_id: str,
    event_type: str,
    batch_id: str | None,
    recipient_id: int | None,
    email: str | None,
    data: Mapping[str, Any],
    created_at: datetime,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "endpoint_id": endpoint_id,
        "type": event_type,
        "batch_id": batch_id,
        "recipient_id": recipient_id,
        "email": email,
        "data": dict(data),
        "created_at": created_at,
        "state": DeliveryState.PENDING,
        "attempts": 0,
        "next_attempt_at": created_at,
    }


async def add_from_events(session: AsyncSession, events: Iterable[Mapping[str, Any]]) -> None:
    """Outbox rows for the events (rows as `mailer.events.record_events` takes them) that
    map to an email webhook type, one per subscribed endpoint."""
    endpoints = await _endpoints(session)
    if not endpoints:
        return
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for event in events:
        kind = catalog.FROM_EVENT.get(str(event["type"]))
        if kind is None:
            continue
        event_id = new_event_id()
        created_at = event.get("created_at") or now
        for endpoint_id, types in endpoints:
            if types is None or kind in types:
                rows.append(
                    _row(
                        event_id,
                        endpoint_id,
                        kind,
                        event.get("batch_id"),
                        event.get("recipient_id"),
                        event.get("email"),
                        event.get("data") or {},
                        created_at,
                    )
                )
    if rows:
        await repository.insert_deliveries(session, rows)


async def add_event(
    session: AsyncSession,
    event_type: str,
    data: Mapping[str, Any],
    *,
    batch_id: str | None = None,
    at: datetime | None = None,
) -> None:
    """One event that is not about an email (batch.completed, sending.paused, ...)."""
    endpoints = await _endpoints(session)
    if not endpoints:
        return
    event_id = new_event_id()
    created_at = at or utcnow()
    rows = [
        _row(event_id, endpoint_id, event_type, batch_id, None, None, data, created_at)
        for endpoint_id, types in endpoints
        if types is None or event_type in types
    ]
    if rows:
        await repository.insert_deliveries(session, rows)
