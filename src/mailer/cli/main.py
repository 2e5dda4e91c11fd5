"""Top-level Typer app: dev, api, worker, migrate, seed, keys, gen-key, dlq, suppressions,
webhooks."""

from __future__ import annotations

import os

import typer

from mailer import __version__
from mailer.cli import dlq, domain, keys, sending, suppressions, webhooks
from mailer.cli.common import exit_quietly_on_broken_pipe, run, settings_or_exit
from mailer.cli.help import Command, new_app
from mailer.cli.purge import purge_command
from mailer.cli.seed import SeedResult
from mailer.cli.send import send_command
from mailer.config import url_for_bind

app = new_app("mailer: self-hosted bulk email service.", add_completion=False)
app.add_typer(keys.app, name="keys")
app.add_typer(dlq.app, name="dlq")
app.add_typer(suppressions.app, name="suppressions")
app.add_typer(domain.app, name="domain")
app.add_typer(sending.app, name="sending")
app.command("send", cls=Command)(send_command)
app.add_typer(webhooks.app, name="webhooks")
app.command("purge", cls=Command)(purge_command)

NEW_ADMIN_KEY_HINT = "Lost the admin key? Make a new one: mailer keys create NAME --admin"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"mailer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """mailer: self-hosted bulk email service."""


@app.command("cleanup-dlq", cls=Command)
def cleanup_dlq(
    days: float = typer.Option(
        7.0, metavar="DAYS", help="Purge dead letters older than this many days."
    ),
    purge: bool = typer.Option(True, "--purge/--no-purge", help="Only review with --no-purge."),
) -> None:
    """Review dead-letter failure reasons and purge old entries."""
    dlq.cleanup_dlq(days, purge)


def _print_seed(result: SeedResult) -> None:
    if result.template_created:
        typer.echo(f"Created the sample template 'Welcome Email' (id {result.template_id}).")
    else:
        typer.echo(f"The sample template 'Welcome Email' exists already (id {result.template_id}).")
    if result.key is not None:
        typer.echo(f"Created an admin API key (id {result.key_id}).")
        typer.echo("  admin key (shown only once, store it now):")
        typer.echo(f"  {result.key}")
    else:
        typer.echo(
            f"{result.admin_keys} active admin key(s) exist already: no key created "
            "(`mailer seed --force` makes another; `mailer keys list` shows them)."
        )


@app.command(cls=Command)
def migrate() -> None:
    """Apply database migrations: create or upgrade the tables (once per release, before
    its API and workers start)."""
    from mailer import migrate as migrations

    settings = settings_or_exit()
    try:
        migrations.upgrade(settings)
    except Exception as exc:  # unreachable database, bad credentials
        typer.echo(f"Could not migrate the database ({type(exc).__name__}: {exc}).", err=True)
        typer.echo(f"Database: {settings.database_description}", err=True)
        typer.echo("Check DATABASE_URL and that the database server is running.", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Database at revision {migrations.head_revision()}.")


@app.command(cls=Command)
def seed(
    force: bool = typer.Option(
        False, "--force", help="Create a new admin key even when one exists."
    ),
) -> None:
    """Create an admin API key (printed once) and the sample template 'Welcome Email'.
    Run again, it creates nothing and says what exists."""
    from mailer.cli.seed import seed_with

    settings = settings_or_exit()
    result = run(lambda: seed_with(settings, only_if_empty=False, force=force))
    assert result is not None
    _print_seed(result)


@app.command("gen-key", cls=Command)
def gen_key(
    name: str = typer.Argument(..., metavar="NAME", help="A name for the key."),
    admin: bool = typer.Option(False, "--admin", help="Grant the admin scope."),
) -> None:
    """Generate an API key (same as `mailer keys create`)."""
    keys.create_key_command(name, admin)


@app.command(cls=Command)
def api(
    host: str | None = typer.Option(
        None, metavar="HOST", help="Bind address (default HOST or 127.0.0.1)."
    ),
    port: int | None = typer.Option(None, metavar="PORT", help="Port (default PORT or 3000)."),
    workers: int = typer.Option(1, min=1, metavar="N", help="API processes."),
) -> None:
    """Run the HTTP API."""
    import uvicorn

    # The app (in each of its processes) reads its settings from the environment: the bind
    # given here goes there too, so that a PUBLIC_URL derived from HOST/PORT follows it.
    if host is not None:
        os.environ["HOST"] = host
    if port is not None:
        os.environ["PORT"] = str(port)
    settings = settings_or_exit()
    uvicorn.run(
        "mailer.app:create_server_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        proxy_headers=True,
    )


@app.command(cls=Command)
def worker() -> None:
    """Run a sending worker. Stops gracefully on SIGTERM."""
    from mailer.worker.main import run_worker

    settings = settings_or_exit()
    try:
        import uvloop  # the API runs on it too (uvicorn picks it); ~20 % less CPU per send
    except ImportError:  # pragma: no cover - platforms without uvloop
        import asyncio

        asyncio.run(run_worker(settings))
    else:
        uvloop.run(run_worker(settings))


@app.command(cls=Command)
def dev(
    host: str | None = typer.Option(
        None, metavar="HOST", help="Bind address (default HOST or 127.0.0.1)."
    ),
    port: int | None = typer.Option(None, metavar="PORT", help="Port (default PORT or 3000)."),
) -> None:
    """Everything in one process: migrate, seed on first run, API + worker."""
    import uvicorn

    from mailer import migrate as migrations
    from mailer.app import create_app
    from mailer.cli.seed import seed_with

    settings = settings_or_exit().with_bind(host, port)
    try:
        migrations.upgrade(settings)
    except Exception as exc:  # the database file or server cannot be used
        typer.echo(f"Could not migrate the database ({type(exc).__name__}: {exc}).", err=True)
        typer.echo(f"Database: {settings.database_description}", err=True)
        raise typer.Exit(1) from None
    seeded = run(lambda: seed_with(settings, only_if_empty=True))
    if seeded is not None:
        _print_seed(seeded)
    base = url_for_bind(settings.host, settings.port)
    typer.echo(
        f"mailer (embedded: {settings.mail_transport.value} transport) on {base}  docs: {base}/docs"
    )
    typer.echo(f"Database: {settings.database_description}")
    if settings.mail_transport.value == "outbox":
        typer.echo(f"Outbox: {settings.outbox_dir}")
    typer.echo(
        f"console: {base}/console/  (sign in with an admin API key"
        + (": the one above)" if seeded is not None else ")")
    )
    typer.echo(NEW_ADMIN_KEY_HINT)
    uvicorn.run(
        create_app(settings, embedded_worker=True, freeze_gc=True),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
    )


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        exit_quietly_on_broken_pipe()
