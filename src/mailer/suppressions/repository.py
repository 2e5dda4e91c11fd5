"""Suppression queries. Addresses reaching this module are already normalized."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.db.dialect import insert_for, member_of
from mailer.models import Suppression

INSERT_CHUNK = 5000


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def insert_ignore(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert rows (email, reason, source, created_at); existing emails are kept. New count."""
    stmt = (
        insert_for(session, Suppression)
        .on_conflict_do_nothing(index_elements=[Suppression.email])
        .returning(Suppression.email)
    )
    inserted = 0
    # executemany: SQLAlchemy batches it into multi-row INSERTs ("insertmanyvalues") with a
    # cached statement; RETURNING yields only the rows actually inserted.
    for chunk in _chunks(rows, INSERT_CHUNK):
        inserted += len((await session.execute(stmt, list(chunk))).all())
    return inserted


async def delete_one(session: AsyncSession, email: str) -> bool:
    stmt = delete(Suppression).where(Suppression.email == email).returning(Suppression.email)
    return (await session.execute(stmt)).first() is not None


async def get_one(session: AsyncSession, email: str) -> Suppression | None:
    return await session.get(Suppression, email)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filters(reason: str | None, search: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if reason is not None:
        conditions.append(Suppression.reason == reason)
    if search:
        pattern = f"%{_escape_like(search.lower())}%"
        conditions.append(Suppression.email.like(pattern, escape="\\"))
    return conditions


async def list_page(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    reason: str | None = None,
    search: str | None = None,
) -> tuple[Sequence[Suppression], int]:
    conditions = _filters(reason, search)
    total = await session.scalar(select(func.count()).select_from(Suppression).where(*conditions))
    page = await session.scalars(
        select(Suppression)
        .where(*conditions)
        .order_by(Suppression.created_at.desc(), Suppression.email)
        .limit(limit)
        .offset(offset)
    )
    return page.all(), int(total or 0)


async def existing_among(
    session: AsyncSession, emails: Sequence[str], *, ignored_reasons: Sequence[str] = ()
) -> set[str]:
    """The subset of `emails` present in the suppression list (for another reason than
    one of `ignored_reasons`)."""
    found: set[str] = set()
    for condition in member_of(session, Suppression.email, emails):
        stmt = select(Suppression.email).where(condition)
        if ignored_reasons:
            stmt = stmt.where(Suppression.reason.not_in(list(ignored_reasons)))
        found.update(await session.scalars(stmt))
    return found


async def iter_all(
    session: AsyncSession, *, reason: str | None = None, page_size: int = 1000
) -> AsyncIterator[Sequence[tuple[str, str, dict[str, Any], datetime]]]:
    """Every suppression (email, reason, source, created_at) in email order, page by page."""
    last: str | None = None
    columns = (Suppression.email, Suppression.reason, Suppression.source, Suppression.created_at)
    while True:
        stmt = select(*columns).where(*_filters(reason, None))
        if last is not None:
            stmt = stmt.where(Suppression.email > last)
        result = await session.execute(stmt.order_by(Suppression.email).limit(page_size))
        page = result.tuples().all()
        if not page:
            return
        yield page
        last = page[-1][0]
