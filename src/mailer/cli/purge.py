"""`mailer purge [--older-than 30d] [--dry-run]`: apply the retention period now."""

from __future__ import annotations

import re

import typer

from mailer.cli.common import run, settings_or_exit
from mailer.db import create_engine, create_sessionmaker
from mailer.models.base import iso_utc
from mailer.retention import service

_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s' or a bare number of days, in days."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhms]?)\s*", text)
    if match is None:
        raise typer.BadParameter("use a number with d, h, m or s, e.g. 30d")
    value, unit = float(match.group(1)), match.group(2) or "d"
    return value * _UNITS[unit] / 86_400.0


def purge_command(
    older_than: str | None = typer.Option(
        None,
        "--older-than",
        metavar="AGE",
        help="Age, e.g. 30d or 12h; default RETENTION_DAYS.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be deleted."),
    duty: float = typer.Option(
        service.DUTY,
        "--duty",
        metavar="SHARE",
        min=0.01,
        max=1.0,
        help="Share of the time spent deleting (pauses in between keep sending fast); "
        "1 = flat out, when nothing sends.",
    ),
) -> None:
    """Delete finished batches' recipients and events, dead letters and metrics older than
    the retention period (batch rows and their counters stay)."""
    settings = settings_or_exit()
    days = parse_age(older_than) if older_than is not None else float(settings.retention_days)
    if days <= 0:
        typer.echo(
            "RETENTION_DAYS is 0 (keep everything) and no --older-than given: nothing to do."
        )
        return

    async def go() -> service.PurgeReport:
        engine = create_engine(settings, pool_size=2)
        try:
            sessionmaker = create_sessionmaker(engine)
            cutoff = service.cutoff_for(days)
            if dry_run:
                return await service.dry_run(sessionmaker, cutoff)
            return await service.purge(sessionmaker, cutoff, duty=duty)
        finally:
            await engine.dispose()

    report = run(go)
    when = iso_utc(report.cutoff.replace(microsecond=0))
    if dry_run:
        parts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in report.counts.items())
        typer.echo(f"Would delete (older than {when}): {parts}.")
        return
    typer.echo(
        f"Deleted (older than {when}): {report.recipients} recipients and {report.events} events "
        f"of {report.batches} batches, {report.dead_letters} dead letters, "
        f"{report.metrics} metric rows, in {report.transactions} transactions."
    )
