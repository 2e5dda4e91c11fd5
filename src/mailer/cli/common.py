"""Helpers shared by CLI commands: settings with friendly errors, one-shot DB sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.config import ConfigError, Settings, get_settings
from mailer.db import create_engine, create_sessionmaker

T = TypeVar("T")


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@asynccontextmanager
async def cli_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = create_engine(settings, pool_size=2)
    try:
        async with create_sessionmaker(engine)() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
    finally:
        await engine.dispose()


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(fn())  # type: ignore[arg-type]
