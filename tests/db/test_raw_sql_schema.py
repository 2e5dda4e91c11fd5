"""Every table and column the hand-written PostgreSQL statements name exists, both in a
freshly migrated database and in the SQLAlchemy models.

Each statement of `mailer.db.pg.STATEMENTS` (and a SELECT of every COPY target's columns)
is PREPAREd by asyncpg twice: against the migrated schema, and against a schema created
from `Base.metadata` alone. PREPARE resolves every table and column without running
anything, so a misspelled name, or a column the migration has and the model lacks (or the
other way round), fails here instead of at run time. A parse of the statements' INSERT
column lists and SET targets checks the same against the models on either backend.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mailer.db import pg
from mailer.models import Base
from tests.fixtures import database

MODELS_SCHEMA = "models_only"


def _checked_sql() -> dict[str, str]:
    """The statements, plus one SELECT per COPY target naming the columns copied."""
    checked = dict(pg.STATEMENTS)
    for table, columns in pg.COPY_COLUMNS.items():
        # Names from pg.COPY_COLUMNS, not input.
        checked[f"copy into {table}"] = f"SELECT {', '.join(columns)} FROM {table} LIMIT 0"  # noqa: S608
    return checked


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    """A database of its own, migrated to head, plus a schema built from the models."""
    if database.BACKEND != "postgres":
        pytest.skip("PostgreSQL backend only")
    database.ensure_postgres_running()
    name = f"mailer_rawsql_{os.getpid()}"
    url = database.create_pg_database(name)

    async def add_models_schema() -> None:
        engine = create_async_engine(
            url.replace("postgresql://", "postgresql+asyncpg://"),
            connect_args={"server_settings": {"search_path": MODELS_SCHEMA}},
        )
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE SCHEMA {MODELS_SCHEMA}"))
            await conn.run_sync(Base.metadata.create_all)
        await engine.dispose()

    asyncio.run(add_models_schema())
    yield url
    database.drop_pg_database(name)


@pytest.fixture
async def connect(fresh_database: str) -> AsyncIterator[object]:
    connections: list[asyncpg.Connection] = []

    async def open_on(schema: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(fresh_database, server_settings={"search_path": schema})
        connections.append(conn)
        return conn

    yield open_on
    for conn in connections:
        await conn.close()


@pytest.mark.postgres_only
@pytest.mark.parametrize("schema", ["public", MODELS_SCHEMA], ids=["migrated", "models"])
@pytest.mark.parametrize("name", sorted(_checked_sql()))
async def test_statement_prepares(connect: object, schema: str, name: str) -> None:
    conn = await connect(schema)  # type: ignore[operator]
    await conn.prepare(_checked_sql()[name])


@pytest.mark.postgres_only
async def test_a_misspelled_column_is_caught(connect: object) -> None:
    """The check above can fail: a statement naming a column no table has."""
    conn = await connect("public")  # type: ignore[operator]
    broken = pg.CLAIM_SQL.replace("claimed_at = $5", "claimed_att = $5", 1)
    assert broken != pg.CLAIM_SQL
    with pytest.raises(asyncpg.UndefinedColumnError):
        await conn.prepare(broken)


@pytest.mark.postgres_only
async def test_the_models_schema_lacks_what_the_models_lack(connect: object) -> None:
    """The models' schema is really the models' (not the migration's): a column only a
    migration could add is missing there."""
    migrated = await connect("public")  # type: ignore[operator]
    await migrated.execute("ALTER TABLE recipients ADD COLUMN migration_only text")
    try:
        sql = "SELECT migration_only FROM recipients"
        await migrated.prepare(sql)
        models = await connect(MODELS_SCHEMA)  # type: ignore[operator]
        with pytest.raises(asyncpg.UndefinedColumnError):
            await models.prepare(sql)
    finally:
        await migrated.execute("ALTER TABLE recipients DROP COLUMN migration_only")


# -- the same names against the models, without a database (both backends) ---------------

_INSERT = re.compile(r"INSERT INTO (\w+) \(([^)]*)\)")
_UPDATE = re.compile(r"UPDATE (\w+)(?: AS (\w+))?\s+SET (.*?)\n\s*(?:FROM|WHERE)", re.S)
_TABLE = re.compile(r"(?:FROM|JOIN|INTO|UPDATE) ([a-z_][a-z0-9_]*)\b(?! *\()")  # not keywords
_FUNCTIONS = {"unnest"}
_SET_TARGET = re.compile(r"(?:^|,)\s*(\w+) =", re.M)


def _columns(table: str) -> set[str]:
    assert table in Base.metadata.tables, f"no model for table {table}"
    return {c.name for c in Base.metadata.tables[table].columns}


def _named(sql: str) -> list[tuple[str, str | None]]:
    """(table, column) pairs a statement writes: INSERT column lists, UPDATE ... SET targets;
    (table, None) for every table it reads or writes."""
    names: list[tuple[str, str | None]] = []
    for table, columns in _INSERT.findall(sql):
        names.extend((table, c.strip()) for c in columns.split(","))
    for table, _alias, assignments in _UPDATE.findall(sql):
        top_level = re.sub(r"CASE.*?END", "", assignments, flags=re.S)
        names.extend((table, c) for c in _SET_TARGET.findall(top_level))
    ctes = set(re.findall(r"(\w+) AS \(", sql))
    names.extend((t, None) for t in _TABLE.findall(sql) if t not in ctes | _FUNCTIONS)
    return names


@pytest.mark.parametrize("name", sorted(_checked_sql()))
def test_named_tables_and_columns_are_in_the_models(name: str) -> None:
    sql = _checked_sql()[name]
    named = _named(sql)
    assert named, f"{name}: no table found in the statement"
    for table, column in named:
        if column is not None:
            assert column in _columns(table), f"{name}: {table}.{column} is not in the models"
        else:
            _columns(table)
    for table, columns in pg.COPY_COLUMNS.items():
        assert set(columns) <= _columns(table)


def test_the_parse_sees_a_misspelled_column() -> None:
    broken = pg.RECORD_OUTCOMES_SQL.replace("failed_count = b.failed_count", "faild_count = 0")
    assert ("batches", "faild_count") in _named(broken)
    assert "faild_count" not in _columns("batches")
