"""`mailer seed`: an admin key (printed once) and the sample template "Welcome Email".

Seeding is idempotent: what exists already (an active admin key, a live template of that
name) is reported and not created again; `force` creates a new admin key all the same (the
template is never duplicated)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.auth import service as keys
from mailer.cli.common import cli_session
from mailer.config import Settings
from mailer.models import ApiKey, Template
from mailer.templates import service as templates

SAMPLE_TEMPLATE = {
    "name": "Welcome Email",
    "html": "<h1>Welcome {{name}}!</h1>",
    "text": "Welcome {{name}}!",
    "variables": {"name": {"type": "string"}},
}
SEED_KEY_NAME = "Seed admin key"


@dataclass
class SeedResult:
    template_id: str
    template_created: bool
    key_id: str | None = None  # the new admin key, when one was created
    key: str | None = None
    admin_keys: int = 0  # active admin keys that existed before


async def _active_admin_keys(session: AsyncSession) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.revoked_at.is_(None), ApiKey.scopes.contains("admin"))
    )
    return int(count or 0)


async def _sample_template_id(session: AsyncSession) -> str | None:
    return await session.scalar(
        select(Template.id)
        .where(Template.name == SAMPLE_TEMPLATE["name"], Template.deleted_at.is_(None))
        .order_by(Template.created_at)
        .limit(1)
    )


async def seed(session: AsyncSession, *, force: bool = False) -> SeedResult:
    admin_keys = await _active_admin_keys(session)
    template_id = await _sample_template_id(session)
    result = SeedResult(
        template_id=template_id or "", template_created=False, admin_keys=admin_keys
    )
    if template_id is None:
        template, _ = await templates.create_template(
            session,
            name=SAMPLE_TEMPLATE["name"],  # type: ignore[arg-type]
            subject=None,
            html=SAMPLE_TEMPLATE["html"],  # type: ignore[arg-type]
            text=SAMPLE_TEMPLATE["text"],  # type: ignore[arg-type]
            variables=SAMPLE_TEMPLATE["variables"],  # type: ignore[arg-type]
        )
        result.template_id, result.template_created = template.id, True
    if admin_keys == 0 or force:
        created = await keys.create_key(session, SEED_KEY_NAME, admin=True)
        result.key_id, result.key = created.key.id, created.secret
    return result


async def is_seeded(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(func.count()).select_from(ApiKey)))


async def seed_with(
    settings: Settings, *, only_if_empty: bool, force: bool = False
) -> SeedResult | None:
    """Seed; with `only_if_empty` (mailer dev) nothing at all once any API key exists."""
    async with cli_session(settings) as session:
        if only_if_empty and await is_seeded(session):
            return None
        return await seed(session, force=force)
