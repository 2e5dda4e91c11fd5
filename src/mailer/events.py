"""Recording events and bumping the per-minute metrics counters: one statement per call.

Shared by the delivery worker and the webhook handlers. Both functions only execute on the
given session; the caller commits. On PostgreSQL, bulk event inserts go through COPY on the
session's own connection (same transaction): the worker writes one event per email, and an
executemany through SQLAlchemy costs ~30 µs of CPU per row against ~2 µs for COPY.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Event, Metric
from mailer.models.base import utcnow

_Kind = TypeVar("_Kind", bound=str)  # MetricKind or a plain string
_EVENT_COLUMNS = ("batch_id", "recipient_id", "email", "type", "data", "created_at")
COPY_MIN_ROWS = 20  # below this an INSERT is as cheap as a COPY round trip


async def record_events(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert events. Each row: type (required), batch_id, recipient_id, email, data, created_at.

    Rows are completed to the same key set so the whole list goes out as one executemany.
    """
    if not rows:
        return
    now = utcnow()
    values: list[dict[str, Any]] = []
    for row in rows:
        unknown = row.keys() - set(_EVENT_COLUMNS)
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
    if len(values) >= COPY_MIN_ROWS and await _copy_events(session, values):
        return
    await session.execute(insert(Event), values)


async def _copy_events(session: AsyncSession, values: list[dict[str, Any]]) -> bool:
    """COPY the rows on PostgreSQL; False (nothing written) elsewhere or when a data value
    is not plain JSON, so the caller inserts them the ordinary way."""
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        return False
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
    except TypeError:
        return False
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        "events", records=records, columns=_EVENT_COLUMNS
    )
    return True


_PG_BUMP_SQL = """
INSERT INTO metrics (bucket, kind, count)
SELECT $1, u.kind, u.count FROM unnest($2::text[], $3::bigint[]) AS u(kind, count)
ON CONFLICT (bucket, kind) DO UPDATE SET count = metrics.count + EXCLUDED.count
"""


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
    conn = await session.connection()
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # Hand-written: SQLAlchemy compiles a multi-row VALUES upsert anew on every call
        # (~1 ms), and the worker bumps the counters on every flush of outcomes.
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute(  # type: ignore[union-attr]
            _PG_BUMP_SQL, bucket, kinds, [totals[k] for k in kinds]
        )
        return
    rows = [{"bucket": bucket, "kind": k, "count": totals[k]} for k in kinds]
    if dialect == "sqlite":
        lite_stmt = sqlite.insert(Metric).values(rows)
        stmt: Any = lite_stmt.on_conflict_do_update(
            index_elements=[Metric.bucket, Metric.kind],
            set_={"count": Metric.count + lite_stmt.excluded.count},
        )
    else:  # pragma: no cover - only the two supported backends
        raise RuntimeError(f"unsupported database dialect: {dialect}")
    await session.execute(stmt)
