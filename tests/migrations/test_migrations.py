"""Alembic migrations on a fresh database: upgrade to head matches the models exactly
(`alembic check`), downgrade to base removes everything, and upgrading again works."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from mailer import migrate, models
from mailer.config import Settings, load_settings
from tests.fixtures.database import create_fresh_database, drop_fresh_database


@pytest.fixture
def fresh_url(tmp_path: Path) -> Iterator[str]:
    url = create_fresh_database(tmp_path)
    yield url
    drop_fresh_database(url)


def settings_for(url: str) -> Settings:
    return load_settings(_env_file=None, database_url=url, app_env="test")


def inspect_db(settings: Settings, fn: Any) -> Any:
    """Run fn(sync connection) on the database and return its result."""

    async def go() -> Any:
        engine = create_async_engine(settings.sqlalchemy_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def schema_diffs(conn: Connection) -> list[Any]:
    # The options env.py uses, so this is what `alembic check` compares.
    context = MigrationContext.configure(
        conn,
        opts={"compare_type": True, "include_object": migrate.include_object_on(conn.dialect.name)},
    )
    return list(compare_metadata(context, models.Base.metadata))


def table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def test_upgrade_from_scratch_matches_the_models(fresh_url: str) -> None:
    settings = settings_for(fresh_url)
    assert inspect_db(settings, table_names) == set()
    migrate.upgrade(settings)
    assert inspect_db(settings, revision) == migrate.head_revision()
    expected = {t.name for t in models.Base.metadata.sorted_tables}
    assert inspect_db(settings, table_names) == expected | {"alembic_version"}
    assert inspect_db(settings, schema_diffs) == []
    # Upgrading again is a no-op (mailer dev migrates on every start).
    migrate.upgrade(settings)
    assert inspect_db(settings, schema_diffs) == []


def test_downgrade_to_base_and_upgrade_again(fresh_url: str) -> None:
    settings = settings_for(fresh_url)
    config = migrate.alembic_config(settings)
    migrate.upgrade(settings)
    command.downgrade(config, "base")
    assert inspect_db(settings, table_names) <= {"alembic_version"}
    assert inspect_db(settings, revision) is None
    migrate.upgrade(settings)
    assert inspect_db(settings, revision) == migrate.head_revision()
    assert inspect_db(settings, schema_diffs) == []


def test_the_comparison_detects_a_drift(fresh_url: str) -> None:
    """Guards the check above: a schema that differs from the models shows up."""
    settings = settings_for(fresh_url)
    migrate.upgrade(settings)

    def drift(conn: Connection) -> list[Any]:
        conn.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))
        return schema_diffs(conn)

    diffs = inspect_db(settings, drift)
    assert any(d[0] == "remove_table" and d[1].name == "stray" for d in diffs), diffs
