"""Alembic environment: async engine, URL from mailer's settings, batch mode on SQLite."""

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from mailer import models
from mailer.config import get_settings
from mailer.db import create_engine
from mailer.migrate import include_object_on

config = context.config
target_metadata = models.Base.metadata


def _url() -> str:
    url = config.attributes.get("sqlalchemy_url")
    return str(url) if url else get_settings().sqlalchemy_url


def _configure(connection: Connection | None = None, **kwargs: Any) -> None:
    url = _url()
    context.configure(
        connection=connection,
        url=None if connection is not None else url,
        target_metadata=target_metadata,
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
        include_object=include_object_on(
            connection.dialect.name if connection is not None else url.split(":")[0].split("+")[0]
        ),
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    from mailer.config import load_settings

    settings = load_settings(database_url=_url())
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
