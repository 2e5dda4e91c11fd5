"""Recording events and bumping the per-minute metrics counters: one statement per call;
and events read by hand-written statements as views (`event_views`).

Shared by the delivery worker and the webhook handlers. Both functions only execute on the
given session; the caller commits. Recorded events also go to the outbound webhooks' outbox
(`webhook_endpoints/outbox.py`) in the same transaction. On PostgreSQL, bulk event inserts
go through COPY on the session's own connection (same transaction): an executemany through
SQLAlchemy costs ~30 µs of CPU per row against ~2 µs for COPY.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar

import orjson
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.db import pg
from mailer.db.dialect import insert_for, postgresql_variant
from mailer.db.pg import COPY_MIN_ROWS, EVENT_COLUMNS
from mailer.models import Event, Metric
from mailer.models.base import utcnow
from mailer.webhook_endpoints import outbox

_Kind = TypeVar("_Kind", bound=str)  # MetricKind or a plain string
__all__ = ["COPY_MIN_ROWS", "bump_metrics", "minute_bucket", "record_events"]


async def record_events(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert events. Each row: type (required), batch_id, recipient_id, email, data, created_at.

    Rows are completed to the same key set so the whole list goes out as one executemany.
    """
    if not rows:
        return
    now = utcnow()
    values: list[dict[str, Any]] = []
    for row in rows:
        unknown = row.keys() - set(EVENT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown event columns: {sorted(unknown)}")
        values.append(
            {
                "batch_id": row.get("batch_id"),
                "recipient_id": row.get("recipient_id"),
                "email": row.get("email"),
                "type": str(row["type"]),
                "data": row.get("data") or {},
                "created_at": row.get("created_at") or now,
            }
        )
    await _insert_events(session, values)
    await outbox.add_from_events(session, values)  # outbound webhooks, same transaction


def _copy_wanted(session: AsyncSession, values: list[dict[str, Any]]) -> bool:
    return len(values) >= COPY_MIN_ROWS


async def _copy_events(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    try:
        records = [
            (
                v["batch_id"],
                v["recipient_id"],
                v["email"],
                v["type"],
                orjson.dumps(v["data"]).decode(),
                _aware(v["created_at"]),
            )
            for v in values
        ]
    except TypeError:  # a data value that is not plain JSON: the ordinary way
        await session.execute(insert(Event), values)
        return
    await pg.copy_records(session, "events", pg.EVENT_COLUMNS, records)


@postgresql_variant(_copy_events, when=_copy_wanted)
async def _insert_events(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    await session.execute(insert(Event), values)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def minute_bucket(at: datetime | None = None) -> datetime:
    """The start of the UTC minute containing `at` (now when None)."""
    moment = at or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


async def bump_metrics(
    session: AsyncSession,
    counts: Mapping[_Kind, int],
    at: datetime | None = None,
) -> None:
    """Add `counts` to the minute bucket of `at` (an upsert; zero counts are skipped)."""
    totals: dict[str, int] = {}
    for kind, count in counts.items():
        if count:
            key = str(kind)
            totals[key] = totals.get(key, 0) + count
    if not totals:
        return
    bucket = minute_bucket(at)
    # Sorted so concurrent callers lock the bucket rows in the same order (no deadlocks).
    kinds = sorted(totals)
    await _upsert_counts(session, bucket, kinds, [totals[k] for k in kinds])


@postgresql_variant(pg.bump_metrics)
async def _upsert_counts(
    session: AsyncSession, bucket: datetime, kinds: list[str], counts: list[int]
) -> None:
    insert_ = insert_for(session, Metric)
    stmt = insert_.values(
        [{"bucket": bucket, "kind": k, "count": n} for k, n in zip(kinds, counts, strict=True)]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Metric.bucket, Metric.kind],
            set_={"count": Metric.count + stmt.excluded.count},
        )
    )


def event_views(rows: Iterable[Any], prefix: str = "") -> list[Any]:
    """Events a hand-written read returned (columns `{prefix}id`, `{prefix}type`, ...,
    `data` as JSON text) as objects with an Event's attributes; rows with a NULL id (an
    outer join that found none) are skipped."""
    return [
        SimpleNamespace(
            id=r[prefix + "id"],
            type=r[prefix + "type"],
            email=r[prefix + "email"],
            recipient_id=r[prefix + "recipient_id"],
            batch_id=r[prefix + "batch_id"],
            created_at=r[prefix + "created_at"],
            data=orjson.loads(r[prefix + "data"]),
        )
        for r in rows
        if r[prefix + "id"] is not None
    ]
