"""`mailer suppressions list|add|remove|import|export`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mailer.addresses import InvalidAddress
from mailer.cli.common import cli_session, run, settings_or_exit
from mailer.models.enums import SuppressionReason
from mailer.suppressions import service

app = typer.Typer(help="Manage the suppression list.", no_args_is_help=True)


@app.command("list")
def list_command(
    limit: int = typer.Option(100, min=1, max=1000),
    offset: int = typer.Option(0, min=0),
    reason: SuppressionReason | None = typer.Option(None, case_sensitive=False),
    search: str | None = typer.Option(None, help="Address contains this text."),
) -> None:
    """List suppressed addresses, newest first."""
    settings = settings_or_exit()

    async def go() -> None:
        async with cli_session(settings) as session:
            rows, total = await service.list(
                session, limit=limit, offset=offset, reason=reason, search=search
            )
        for row in rows:
            typer.echo(f"{row.created_at:%Y-%m-%d %H:%M}  {row.reason:11}  {row.email}")
        typer.echo(f"{total} suppressed address(es)")

    run(go)


@app.command("add")
def add_command(
    emails: list[str] = typer.Argument(..., help="Addresses to suppress."),
    reason: SuppressionReason = typer.Option(SuppressionReason.MANUAL, case_sensitive=False),
) -> None:
    """Suppress addresses (never sent to again until removed)."""
    settings = settings_or_exit()

    async def go() -> int:
        async with cli_session(settings) as session:
            return await service.add(session, emails, reason, {"type": "cli"})

    try:
        added = run(go)
    except InvalidAddress as exc:
        typer.echo(f"Invalid address: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Suppressed {added} new address(es) of {len(emails)}.")


@app.command("remove")
def remove_command(email: str = typer.Argument(..., help="Address to remove.")) -> None:
    """Remove an address from the suppression list."""
    settings = settings_or_exit()

    async def go() -> bool:
        async with cli_session(settings) as session:
            return await service.remove(session, email)

    if not run(go):
        typer.echo(f"{email} is not on the suppression list.", err=True)
        raise typer.Exit(1)
    typer.echo(f"Removed {email}.")


@app.command("import")
def import_command(
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="CSV file (email[,reason])."
    ),
    reason: SuppressionReason = typer.Option(SuppressionReason.MANUAL, case_sensitive=False),
) -> None:
    """Import addresses from CSV (header optional; the export format reads back)."""
    settings = settings_or_exit()
    size = path.stat().st_size

    async def go() -> service.ImportResult:
        with (
            path.open(newline="", encoding="utf-8") as handle,
            typer.progressbar(length=size, label="Importing", file=sys.stderr) as bar,
        ):
            last = 0

            def progress(_: int) -> None:
                nonlocal last
                position = handle.tell() if not handle.closed else size
                bar.update(max(0, position - last))
                last = position

            async with cli_session(settings) as session:
                return await service.import_csv(
                    session,
                    handle,
                    reason=reason,
                    source={"type": "csv", "file": path.name},
                    progress=progress,
                )

    result = run(go)
    typer.echo(
        f"Read {result.rows} row(s): {result.added} added, {result.skipped} already "
        f"suppressed or repeated, {result.invalid} invalid."
    )
    for line, value, problem in result.errors[:20]:
        typer.echo(f"  line {line}: {value!r}: {problem}", err=True)


@app.command("export")
def export_command(
    path: Path = typer.Argument(..., dir_okay=False, help="CSV file to write ('-' = stdout)."),
    reason: SuppressionReason | None = typer.Option(None, case_sensitive=False),
) -> None:
    """Export the suppression list as CSV (email, reason, created_at, source)."""
    settings = settings_or_exit()

    async def go() -> int:
        async with cli_session(settings) as session:
            if str(path) == "-":
                return await service.export_csv(session, sys.stdout, reason=reason)
            with path.open("w", newline="", encoding="utf-8") as handle:
                return await service.export_csv(session, handle, reason=reason)

    count = run(go)
    typer.echo(f"Exported {count} address(es).", err=True)
