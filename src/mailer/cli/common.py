"""Helpers shared by CLI commands: settings with friendly errors, one-shot DB sessions, and
errors reported as what they are (database, file, closed pipe) without a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NoReturn, TypeVar

import typer
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.config import ConfigError, Settings, get_settings
from mailer.db import create_engine, create_sessionmaker, session_scope

T = TypeVar("T")

# What a process killed by SIGPIPE reports to its shell (128 + 13), as `yes | head` does.
EXIT_BROKEN_PIPE = 141


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


def exit_quietly_on_broken_pipe() -> NoReturn:
    """The reader of our stdout went away (`mailer ... | head`): stop without a message, as
    Unix tools do. Python would complain again when it flushes stdout at exit: point stdout
    at /dev/null first."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (tests)
        os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(EXIT_BROKEN_PIPE)


def database_error(settings: Settings, exc: BaseException) -> NoReturn:
    lines = str(exc).strip().splitlines()
    typer.echo(f"Database error ({type(exc).__name__}): {lines[0] if lines else ''}", err=True)
    typer.echo(f"Database: {settings.database_description}", err=True)
    typer.echo("Check DATABASE_URL, that the database is up, and `mailer migrate`.", err=True)
    raise typer.Exit(1)


class FileProblem(Exception):
    """A file (or standard input/output) a command reads or writes failed: reported by
    run() naming the file, never as a database error."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def file_error(exc: OSError) -> NoReturn:
    report_file_problem(FileProblem(str(exc.filename), exc.strerror or str(exc)))


def report_file_problem(problem: FileProblem) -> NoReturn:
    typer.echo(f"Cannot use {problem.name}: {problem.problem}.", err=True)
    raise typer.Exit(1)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine. Database trouble (unreachable, not migrated) is a short
    message naming the database and exit 1; a file that cannot be opened names the file;
    a closed pipe ends the command quietly."""
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except BrokenPipeError:
        exit_quietly_on_broken_pipe()
    except FileProblem as exc:
        report_file_problem(exc)
    except OSError as exc:
        if exc.filename is not None:
            file_error(exc)
        # Without a file name: the database server cannot be reached (asyncpg and the
        # socket layer raise these unwrapped).
        database_error(get_settings(), exc)
    except (OperationalError, InterfaceError, ProgrammingError, DBAPIError) as exc:
        database_error(get_settings(), exc)
