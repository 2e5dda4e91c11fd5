"""Run Alembic migrations programmatically (`mailer migrate`) and report the head revision."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def include_object_on(dialect: str) -> Any:
    """Alembic's `include_object` for a database of this dialect: leaves out the models'
    objects created on another dialect only (`Index(...).ddl_if(dialect=...)`), which
    autogenerate would otherwise report as missing."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        only = getattr(obj, "_ddl_if", None)
        return only is None or only.dialect is None or only.dialect == dialect

    return include


def alembic_config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["sqlalchemy_url"] = settings.sqlalchemy_url
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


@functools.cache
def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def current_revision(conn: AsyncConnection) -> str | None:
    try:
        result = await conn.execute(text("SELECT version_num FROM alembic_version"))
    except Exception:  # table missing: never migrated
        return None
    row = result.first()
    return str(row[0]) if row else None
