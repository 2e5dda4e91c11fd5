"""`mailer suppressions list|add|remove|import|export`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import typer

from mailer.addresses import InvalidAddress, normalize_email
from mailer.cli.common import FileProblem, cli_session, file_error, run, settings_or_exit
from mailer.cli.help import Command, new_app
from mailer.models.enums import SuppressionReason
from mailer.suppressions import service

app = new_app("Manage the suppression list.")
REASONS_HELP = "One of: " + ", ".join(r.value.lower() for r in SuppressionReason) + "."


@app.command("list", cls=Command)
def list_command(
    limit: int = typer.Option(100, min=1, max=1000, metavar="N", help="At most N rows."),
    offset: int = typer.Option(0, min=0, metavar="N", help="Skip the first N rows."),
    reason: SuppressionReason | None = typer.Option(
        None, case_sensitive=False, metavar="REASON", help=REASONS_HELP
    ),
    search: str | None = typer.Option(None, metavar="TEXT", help="Address contains this text."),
) -> None:
    """List suppressed addresses, newest first."""
    settings = settings_or_exit()

    async def go() -> None:
        async with cli_session(settings) as session:
            rows, total = await service.list(
                session, limit=limit, offset=offset, reason=reason, search=search
            )
        typer.echo(f"{'SUPPRESSED AT':16}  {'REASON':11}  EMAIL")
        for row in rows:
            typer.echo(f"{row.created_at:%Y-%m-%d %H:%M}  {row.reason:11}  {row.email}")
        typer.echo(f"{total} suppressed address(es)")

    run(go)


@app.command("add", cls=Command)
def add_command(
    emails: list[str] = typer.Argument(..., metavar="EMAIL", help="Addresses to suppress."),
    reason: SuppressionReason = typer.Option(
        SuppressionReason.MANUAL, case_sensitive=False, metavar="REASON", help=REASONS_HELP
    ),
) -> None:
    """Suppress addresses (never sent to again until removed). Like `import`, the valid
    addresses are added and each invalid one is named; the exit code is then 1."""
    settings = settings_or_exit()
    valid: list[str] = []
    invalid: list[tuple[str, str]] = []
    for email in emails:
        try:
            normalize_email(email)
        except InvalidAddress as exc:
            invalid.append((email, str(exc)))
        else:
            valid.append(email)

    async def go() -> int:
        async with cli_session(settings) as session:
            return await service.add(session, valid, reason, {"type": "cli"})

    added = run(go) if valid else 0
    typer.echo(f"Suppressed {added} new address(es) of {len(valid)} valid.")
    for email, problem in invalid:
        typer.echo(f"Invalid address {email!r}: {problem.rstrip('.')}; not added.", err=True)
    if invalid:
        raise typer.Exit(1)


@app.command("remove", cls=Command)
def remove_command(
    email: str = typer.Argument(..., metavar="EMAIL", help="Address to remove."),
) -> None:
    """Remove an address from the suppression list."""
    settings = settings_or_exit()

    async def go() -> bool:
        async with cli_session(settings) as session:
            return await service.remove(session, email)

    if not run(go):
        typer.echo(f"{email} is not on the suppression list.", err=True)
        raise typer.Exit(1)
    typer.echo(f"Removed {email}.")


def _counted_lines(handle: IO[bytes], name: str, on_line: Callable[[int], None]) -> Iterator[str]:
    """The file's lines as text, reporting each one's size in bytes: the csv reader
    iterates the file, which forbids tell() on it. Decoded line by line so that an error
    names its line; a UTF-8 byte order mark (spreadsheets write one) is skipped. Errors
    name the file (the import is then rolled back whole)."""
    number = 0
    try:
        for number, raw in enumerate(handle, start=1):
            on_line(len(raw))
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise FileProblem(
                    name, f"line {number} is not UTF-8 text ({exc.reason}); nothing was imported"
                ) from None
    except OSError as exc:
        raise FileProblem(name, f"{exc.strerror or exc}; nothing was imported") from None


class _NamedOutput:
    """A text file whose write errors (a full disk) name it; a closed pipe stays a
    BrokenPipeError, which ends the command quietly."""

    def __init__(self, handle: IO[str], name: str) -> None:
        self._handle = handle
        self._name = name

    def write(self, text: str) -> int:
        try:
            return self._handle.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise FileProblem(self._name, exc.strerror or str(exc)) from None

    def flush(self) -> None:
        try:
            self._handle.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise FileProblem(self._name, exc.strerror or str(exc)) from None


def _open_text(path: Path) -> IO[str]:
    try:
        return path.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        file_error(exc)


def _open_bytes(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        file_error(exc)


STDIO = Path("-")


@app.command("import", cls=Command)
def import_command(
    path: Path = typer.Argument(
        ..., dir_okay=False, metavar="FILE", help="CSV file (email[,reason]; '-' = stdin)."
    ),
    reason: SuppressionReason = typer.Option(
        SuppressionReason.MANUAL,
        case_sensitive=False,
        metavar="REASON",
        help=f"For rows without a reason. {REASONS_HELP}",
    ),
) -> None:
    """Import addresses from CSV (header optional; the export format reads back)."""
    settings = settings_or_exit()
    from_stdin = path == STDIO
    name = "standard input" if from_stdin else str(path)
    handle = sys.stdin.buffer if from_stdin else _open_bytes(path)
    size = 0 if from_stdin else os.fstat(handle.fileno()).st_size
    read = 0

    def count(n: int) -> None:
        nonlocal read
        read += n

    async def go() -> service.ImportResult:
        with (
            handle,
            typer.progressbar(length=size, label="Importing", file=sys.stderr) as bar,
        ):
            shown = 0

            def progress(_: int) -> None:
                nonlocal shown
                bar.update(read - shown)
                shown = read

            async with cli_session(settings) as session:
                return await service.import_csv(
                    session,
                    _counted_lines(handle, name, count),
                    reason=reason,
                    source={"type": "csv", "file": "-" if from_stdin else path.name},
                    progress=progress,
                )

    result = run(go)
    typer.echo(
        f"Read {result.rows} row(s): {result.added} added, {result.skipped} already "
        f"suppressed or repeated, {result.invalid} invalid."
    )
    for line, value, problem in result.errors[:20]:
        typer.echo(f"  line {line}: {value!r}: {problem}", err=True)


@app.command("export", cls=Command)
def export_command(
    path: Path = typer.Argument(
        ..., dir_okay=False, metavar="FILE", help="CSV file to write ('-' = stdout)."
    ),
    reason: SuppressionReason | None = typer.Option(
        None, case_sensitive=False, metavar="REASON", help=f"Only this reason. {REASONS_HELP}"
    ),
) -> None:
    """Export the suppression list as CSV (email, reason, created_at, source)."""
    settings = settings_or_exit()
    to_stdout = path == STDIO
    opened = sys.stdout if to_stdout else _open_text(path)
    handle = _NamedOutput(opened, "standard output" if to_stdout else str(path))

    async def go() -> int:
        async with cli_session(settings) as session:
            count = await service.export_csv(session, handle, reason=reason)
        handle.flush()  # a full disk or a closed pipe shows here, inside run()
        return count

    try:
        count = run(go)
    finally:
        if not to_stdout:
            with contextlib.suppress(OSError):  # its error, if any, was reported above
                opened.close()
    typer.echo(f"Exported {count} address(es).", err=True)
