"""Helpers shared by CLI commands: settings with friendly errors, one-shot DB sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import typer
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.config import ConfigError, Settings, get_settings
from mailer.db import create_engine, create_sessionmaker, session_scope

T = TypeVar("T")


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@asynccontextmanager
async def cli_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One unit of work of a command: commits at the end (then runs the after-commit
    callbacks, see mailer.db.after_commit), rolls back on any exception."""
    engine = create_engine(settings, pool_size=2)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            yield session
    finally:
        await engine.dispose()


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine. Database trouble (unreachable, not migrated) is a short
    message and exit 1, not a traceback."""
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except (OSError, OperationalError, InterfaceError, ProgrammingError) as exc:
        lines = str(exc).strip().splitlines()
        typer.echo(f"Database error ({type(exc).__name__}): {lines[0] if lines else ''}", err=True)
        typer.echo("Check DATABASE_URL, that the database is up, and `mailer migrate`.", err=True)
        raise typer.Exit(1) from None
