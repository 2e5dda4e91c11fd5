"""Top-level Typer app: dev, api, worker, migrate, seed, keys, gen-key, dlq, suppressions."""

from __future__ import annotations

import typer

from mailer.cli import dlq, domain, keys, sending, suppressions
from mailer.cli.common import run, settings_or_exit

app = typer.Typer(
    help="mailer: self-hosted bulk email service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(dlq.app, name="dlq")
app.add_typer(suppressions.app, name="suppressions")
app.add_typer(domain.app, name="domain")
app.add_typer(sending.app, name="sending")


@app.command("cleanup-dlq")
def cleanup_dlq(
    days: float = typer.Option(7.0, help="Purge dead letters older than this many days."),
    purge: bool = typer.Option(True, "--purge/--no-purge", help="Only review with --no-purge."),
) -> None:
    """Review dead-letter failure reasons and purge old entries (ORIGINAL's cleanup-dlq)."""
    dlq.cleanup_dlq(days, purge)


def _print_seed(result: object) -> None:
    from mailer.cli.seed import SeedResult

    assert isinstance(result, SeedResult)
    typer.echo("Seeded an admin API key and the sample template 'Welcome Email'.")
    typer.echo(f"  template id: {result.template_id}")
    typer.echo(f"  admin key id: {result.key_id}")
    typer.echo("  admin key (shown only once, store it now):")
    typer.echo(f"  {result.key}")


@app.command()
def migrate() -> None:
    """Apply database migrations (the Node service's `prisma:migrate`)."""
    from mailer import migrate as migrations

    settings = settings_or_exit()
    try:
        migrations.upgrade(settings)
    except Exception as exc:  # unreachable database, bad credentials
        typer.echo(f"Could not migrate the database ({type(exc).__name__}: {exc}).", err=True)
        typer.echo("Check DATABASE_URL and that the database server is running.", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Database at revision {migrations.head_revision()}.")


@app.command()
def seed() -> None:
    """Create an admin API key (printed once) and the sample template."""
    from mailer.cli.seed import seed_with

    settings = settings_or_exit()
    _print_seed(run(lambda: seed_with(settings, only_if_empty=False)))


@app.command("gen-key")
def gen_key(
    name: str = typer.Argument(..., help="A name for the key."),
    admin: bool = typer.Option(False, "--admin", help="Grant the admin scope."),
) -> None:
    """Generate an API key (same as `mailer keys create`)."""
    keys.create_key_command(name, admin)


@app.command()
def api(
    host: str | None = typer.Option(None, help="Bind address (default HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default PORT or 3000)."),
    workers: int = typer.Option(1, min=1, help="API processes."),
) -> None:
    """Run the HTTP API (the Node service's `start`)."""
    import uvicorn

    settings = settings_or_exit()
    uvicorn.run(
        "mailer.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        proxy_headers=True,
    )


@app.command()
def worker() -> None:
    """Run a sending worker (the Node service's `start:worker`). Stops gracefully on SIGTERM."""
    from mailer.worker.main import run_worker

    settings = settings_or_exit()
    try:
        import uvloop  # the API runs on it too (uvicorn picks it); ~20 % less CPU per send
    except ImportError:  # pragma: no cover - platforms without uvloop
        import asyncio

        asyncio.run(run_worker(settings))
    else:
        uvloop.run(run_worker(settings))


@app.command()
def dev(
    host: str | None = typer.Option(None, help="Bind address (default HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default PORT or 3000)."),
) -> None:
    """Everything in one process: migrate, seed on first run, API + worker."""
    import uvicorn

    from mailer import migrate as migrations
    from mailer.app import create_app
    from mailer.cli.seed import seed_with

    settings = settings_or_exit()
    migrations.upgrade(settings)
    seeded = run(lambda: seed_with(settings, only_if_empty=True))
    if seeded is not None:
        _print_seed(seeded)
    bind_host, bind_port = host or settings.host, port or settings.port
    typer.echo(
        f"mailer (embedded: {settings.mail_transport.value} transport) on "
        f"http://{bind_host}:{bind_port}  docs: http://{bind_host}:{bind_port}/docs"
    )
    uvicorn.run(
        create_app(settings, embedded_worker=True),
        host=bind_host,
        port=bind_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
    )


def main() -> None:
    app()
