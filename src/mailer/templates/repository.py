"""Queries on templates and template_versions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import Template, TemplateVersion


async def get_live(session: AsyncSession, template_id: str) -> Template | None:
    template = await session.get(Template, template_id)
    if template is None or template.deleted_at is not None:
        return None
    return template


async def get_live_with_version(
    session: AsyncSession, template_id: str
) -> tuple[Template, TemplateVersion] | None:
    """A live template and its current version, in one round trip."""
    row = (
        await session.execute(
            select(Template, TemplateVersion)
            .join(TemplateVersion, TemplateVersion.id == Template.current_version_id)
            .where(Template.id == template_id, Template.deleted_at.is_(None))
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def list_live(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[Sequence[tuple[Template, TemplateVersion]], int]:
    live = Template.deleted_at.is_(None)
    total = await session.scalar(select(func.count()).select_from(Template).where(live))
    rows = await session.execute(
        select(Template, TemplateVersion)
        .join(TemplateVersion, TemplateVersion.id == Template.current_version_id)
        .where(live)
        .order_by(Template.created_at.desc(), Template.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [(t, v) for t, v in rows.tuples()], int(total or 0)
