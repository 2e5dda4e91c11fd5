"""`mailer dlq list|retry|purge` and `mailer cleanup-dlq`."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import typer

from mailer.cli.common import cli_session, run, settings_or_exit
from mailer.cli.help import Command, new_app
from mailer.deadletters import service
from mailer.models.base import utcnow
from mailer.queue.factory import build_queue

app = new_app("Inspect, retry and purge the dead letter queue.")


@app.command("list", cls=Command)
def list_command(
    limit: int = typer.Option(100, min=1, max=1000, metavar="N", help="At most N rows."),
    offset: int = typer.Option(0, min=0, metavar="N", help="Skip the first N rows."),
    batch: str | None = typer.Option(None, metavar="BATCH_ID", help="Only this batch."),
) -> None:
    """List dead letters with their last error."""
    settings = settings_or_exit()

    async def go() -> None:
        async with cli_session(settings) as session:
            rows, total = await service.list_dead_letters(
                session, limit=limit, offset=offset, batch_id=batch
            )
        typer.echo(f"{'ID':>6}  {'BATCH':26}  {'SEQ':>13}  {'RCPT':>5}  {'TRIES':>5}  ERROR")
        for r in rows:
            seq = f"{r.seq_start}-{r.seq_end - 1}"
            typer.echo(
                f"{r.id:>6}  {r.batch_id:26}  {seq:>13}  {r.recipient_count:>5}  "
                f"{r.attempts:>5}  {r.error[:80]}"
            )
        typer.echo(f"{total} dead letter(s)")

    run(go)


@app.command("retry", cls=Command)
def retry_command(
    ids: list[int] = typer.Argument(None, metavar="ID", help="Dead letter ids; none = all."),
) -> None:
    """Send the dead letters' recipients again."""
    settings = settings_or_exit()

    def unreachable(exc: Exception) -> None:  # the workers' reconciler will enqueue them
        typer.echo(
            f"Queue unreachable ({type(exc).__name__}); workers will pick the "
            "recipients up on their next reconcile.",
            err=True,
        )

    async def go() -> service.RetryResult:
        queue = build_queue(settings)
        try:
            async with cli_session(settings) as session:
                return await service.retry_dead_letters(
                    session, queue, ids or None, on_enqueue_failure=unreachable
                )
        finally:
            await queue.close()

    result = run(go)
    typer.echo(
        f"Retrying {result.recipients} recipient(s) from {result.dead_letters} dead letter(s)."
    )


@app.command("purge", cls=Command)
def purge_command(
    older_than_days: float | None = typer.Option(
        None,
        "--older-than-days",
        metavar="DAYS",
        help="Only dead letters older than this; default all.",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete dead letters (their recipients stay FAILED)."""
    settings = settings_or_exit()
    if not yes:
        typer.confirm("Delete dead letters?", abort=True)
    before = utcnow() - timedelta(days=older_than_days) if older_than_days is not None else None

    async def go() -> int:
        async with cli_session(settings) as session:
            return await service.purge_dead_letters(session, before=before)

    typer.echo(f"Deleted {run(go)} dead letter(s).")


def cleanup_dlq(days: float, purge: bool) -> None:
    """Review failure reasons, then purge entries older than `days`."""
    settings = settings_or_exit()

    async def go() -> tuple[Counter[str], int, int]:
        async with cli_session(settings) as session:
            rows, total = await service.list_dead_letters(session, limit=100_000, offset=0)
            reasons: Counter[str] = Counter(r.error[:120] for r in rows)
            deleted = 0
            if purge:
                deleted = await service.purge_dead_letters(
                    session, before=utcnow() - timedelta(days=days)
                )
        return reasons, total, deleted

    reasons, total, deleted = run(go)
    typer.echo(f"{total} dead letter(s). Reasons:")
    if reasons:
        typer.echo(f"  {'COUNT':>6}  REASON")
    for reason, count in reasons.most_common(20):
        typer.echo(f"  {count:>6}  {reason}")
    if purge:
        typer.echo(f"Purged {deleted} dead letter(s) older than {days:g} day(s).")
