"""SQL of outbound webhooks: endpoints, the outbox rows and their delivery state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.db import pg
from mailer.db.dialect import member_of, postgresql_variant
from mailer.models import Batch, Recipient, WebhookDelivery, WebhookEndpoint
from mailer.models.webhook_endpoint import DeliveryState

D = WebhookDelivery
E = WebhookEndpoint


# -- endpoints ---------------------------------------------------------------------------


async def subscriptions(session: AsyncSession) -> list[tuple[str, list[str]]]:
    """(id, event filter) of every enabled endpoint."""
    result = await session.execute(select(E.id, E.events).where(E.enabled.is_(True)))
    return [(str(i), list(events or [])) for i, events in result.tuples()]


async def get_endpoint(
    session: AsyncSession, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpoint | None:
    stmt = select(E).where(E.id == endpoint_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def list_endpoints(
    session: AsyncSession, limit: int, offset: int
) -> tuple[list[WebhookEndpoint], int]:
    rows = await session.scalars(select(E).order_by(E.created_at, E.id).limit(limit).offset(offset))
    total = await session.scalar(select(func.count()).select_from(E))
    return list(rows), int(total or 0)


async def endpoints_by_id(session: AsyncSession, ids: Sequence[str]) -> dict[str, WebhookEndpoint]:
    out: dict[str, WebhookEndpoint] = {}
    for condition in member_of(session, E.id, list(ids)):
        for endpoint in await session.scalars(select(E).where(condition)):
            out[endpoint.id] = endpoint
    return out


async def delete_endpoint(session: AsyncSession, endpoint_id: str) -> bool:
    await session.execute(delete(D).where(D.endpoint_id == endpoint_id))
    result = await session.execute(delete(E).where(E.id == endpoint_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_endpoints_ok(session: AsyncSession, ids: Sequence[str]) -> None:
    if ids:
        await session.execute(
            update(E)
            .where(E.id.in_(ids), E.failing_since.is_not(None))
            .values(failing_since=None)
            .execution_options(synchronize_session=False)
        )


async def mark_endpoints_failing(session: AsyncSession, ids: Sequence[str], now: datetime) -> None:
    if ids:
        await session.execute(
            update(E)
            .where(E.id.in_(ids), E.failing_since.is_(None))
            .values(failing_since=now)
            .execution_options(synchronize_session=False)
        )


async def disable_endpoints(
    session: AsyncSession, ids: Sequence[str], reason: str, now: datetime
) -> None:
    if ids:
        await session.execute(
            update(E)
            .where(E.id.in_(ids), E.enabled.is_(True))
            .values(enabled=False, disabled_reason=reason[:500], updated_at=now)
            .execution_options(synchronize_session=False)
        )


async def failing_since_before(session: AsyncSession, cutoff: datetime) -> list[str]:
    result = await session.scalars(
        select(E.id).where(E.enabled.is_(True), E.failing_since < cutoff)
    )
    return list(result)


# -- the outbox --------------------------------------------------------------------------


def _copy_wanted(session: AsyncSession, rows: list[dict[str, Any]]) -> bool:
    return len(rows) >= pg.COPY_MIN_ROWS


async def _copy_deliveries(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    try:
        records = [
            (
                r["event_id"],
                r["endpoint_id"],
                r["type"],
                r["batch_id"],
                r["recipient_id"],
                r["email"],
                orjson.dumps(r["data"]).decode(),
                _aware(r["created_at"]),
                r["state"],
                r["attempts"],
                _aware(r["next_attempt_at"]),
            )
            for r in rows
        ]
    except TypeError:  # data that is not plain JSON: the ordinary way
        await session.execute(insert(D), rows)
        return
    await pg.copy_records(session, "webhook_deliveries", pg.WEBHOOK_DELIVERY_COLUMNS, records)


@postgresql_variant(_copy_deliveries, when=_copy_wanted)
async def insert_deliveries(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Outbox rows (keys: pg.WEBHOOK_DELIVERY_COLUMNS): one executemany, or COPY."""
    await session.execute(insert(D), rows)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def add_delivery(session: AsyncSession, **values: Any) -> WebhookDelivery:
    delivery = WebhookDelivery(**values)
    session.add(delivery)
    await session.flush()
    return delivery


# -- the dispatcher ------------------------------------------------------------------------


async def claim_due(
    session: AsyncSession,
    now: datetime,
    lease_until: datetime,
    limit: int,
    exclude: Sequence[str] = (),
) -> list[WebhookDelivery]:
    """Lease up to `limit` due deliveries of enabled endpoints (attempts + 1). On PostgreSQL
    rows another worker is claiming are skipped (SKIP LOCKED); SQLite serializes writers.
    A delivery whose lease ran out (its worker died) is due again."""
    due = (
        select(D.id)
        .join(E, E.id == D.endpoint_id)
        .where(
            D.state == DeliveryState.PENDING,
            D.next_attempt_at <= now,
            or_(D.leased_until.is_(None), D.leased_until < now),
            E.enabled.is_(True),
        )
        .order_by(D.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=D)
    )
    if exclude:
        due = due.where(D.endpoint_id.not_in(list(exclude)))
    result = await session.scalars(
        update(D)
        .where(D.id.in_(due.scalar_subquery()))
        .values(leased_until=lease_until, attempts=D.attempts + 1)
        .returning(D)
        .execution_options(synchronize_session=False)
    )
    return list(result)


async def batch_contexts(
    session: AsyncSession, batch_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for condition in member_of(session, Batch.id, list(batch_ids)):
        result = await session.execute(
            select(
                Batch.id,
                Batch.template_id,
                Batch.metadata_,
                Batch.tags,
                Batch.status,
                Batch.total_recipients,
                Batch.sent_count,
                Batch.failed_count,
                Batch.suppressed_count,
                Batch.cancelled_count,
            ).where(condition)
        )
        for row in result.tuples():
            out[row[0]] = {
                "template_id": row[1],
                "metadata": row[2],
                "tags": row[3],
                "status": row[4],
                "counts": {
                    "total": row[5],
                    "sent": row[6],
                    "failed": row[7],
                    "suppressed": row[8],
                    "cancelled": row[9],
                },
            }
    return out


async def provider_message_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, str | None]:
    if not ids:
        return {}
    result = await session.execute(
        select(Recipient.id, Recipient.provider_message_id).where(Recipient.id.in_(ids))
    )
    return {int(rid): pmid for rid, pmid in result.tuples()}


async def save_results(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Each attempt's result by primary key; an executemany per row shape."""
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(tuple(sorted(row)), []).append(row)
    for group in grouped.values():
        await session.execute(update(D).execution_options(synchronize_session=False), group)


async def delete_orphans(session: AsyncSession) -> int:
    """Waiting deliveries naming an endpoint that no longer exists (written from a stale
    cache just after its deletion); the partial index of due rows finds them."""
    result = await session.execute(
        delete(D).where(
            D.state == DeliveryState.PENDING,
            D.next_attempt_at.is_not(None),
            ~select(E.id).where(E.id == D.endpoint_id).exists(),
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_finished_before(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Up to `limit` delivered or failed deliveries created before `cutoff`."""
    old = (
        select(D.id)
        .where(D.created_at < cutoff, D.state != DeliveryState.PENDING)
        .order_by(D.created_at)
        .limit(limit)
    )
    result = await session.execute(delete(D).where(D.id.in_(old.scalar_subquery())))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# -- the delivery log --------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession, endpoint_id: str, before_id: int | None, limit: int
) -> list[WebhookDelivery]:
    stmt = select(D).where(D.endpoint_id == endpoint_id)
    if before_id is not None:
        stmt = stmt.where(D.id < before_id)
    return list(await session.scalars(stmt.order_by(D.id.desc()).limit(limit)))


async def latest_deliveries(
    session: AsyncSession, endpoint_ids: Sequence[str]
) -> dict[str, WebhookDelivery]:
    """Each endpoint's newest delivery: one index lookup per endpoint (endpoint_id, id)."""
    if not endpoint_ids:
        return {}
    newest = (
        select(D.id).where(D.endpoint_id == E.id).order_by(D.id.desc()).limit(1)
    ).scalar_subquery()
    ids = select(newest).where(E.id.in_(list(endpoint_ids)))
    rows = await session.scalars(select(D).where(D.id.in_(ids)))
    return {row.endpoint_id: row for row in rows}


async def get_delivery(
    session: AsyncSession, endpoint_id: str, delivery_id: int
) -> WebhookDelivery | None:
    return (
        await session.scalars(select(D).where(D.id == delivery_id, D.endpoint_id == endpoint_id))
    ).first()


async def replay_failed_since(
    session: AsyncSession, endpoint_id: str, since: datetime, now: datetime
) -> int:
    """FAILED deliveries whose last attempt was at or after `since` → PENDING, due now."""
    result = await session.execute(
        update(D)
        .where(
            D.endpoint_id == endpoint_id,
            D.state == DeliveryState.FAILED,
            D.last_attempt_at >= since,
        )
        .values(state=DeliveryState.PENDING, attempts=0, next_attempt_at=now, leased_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
