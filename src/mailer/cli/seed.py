"""`mailer seed`: an admin key (printed once) and the sample template of the
Node service's seed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.auth import service as keys
from mailer.cli.common import cli_session
from mailer.config import Settings
from mailer.models import ApiKey
from mailer.templates import service as templates

SAMPLE_TEMPLATE = {
    "name": "Welcome Email",
    "html": "<h1>Welcome {{name}}!</h1>",
    "text": "Welcome {{name}}!",
    "variables": {"name": {"type": "string"}},
}


@dataclass
class SeedResult:
    key_id: str
    key: str
    template_id: str


async def seed(session: AsyncSession) -> SeedResult:
    created = await keys.create_key(session, "Seed admin key", admin=True)
    template, _ = await templates.create_template(
        session,
        name=SAMPLE_TEMPLATE["name"],  # type: ignore[arg-type]
        subject=None,
        html=SAMPLE_TEMPLATE["html"],  # type: ignore[arg-type]
        text=SAMPLE_TEMPLATE["text"],  # type: ignore[arg-type]
        variables=SAMPLE_TEMPLATE["variables"],  # type: ignore[arg-type]
    )
    return SeedResult(key_id=created.key.id, key=created.secret, template_id=template.id)


async def is_seeded(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(func.count()).select_from(ApiKey)))


async def seed_with(settings: Settings, *, only_if_empty: bool) -> SeedResult | None:
    async with cli_session(settings) as session:
        if only_if_empty and await is_seeded(session):
            return None
        return await seed(session)
