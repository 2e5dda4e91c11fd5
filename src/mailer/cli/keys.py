"""`mailer keys create|list|revoke` (`mailer gen-key` is `keys create`)."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from mailer.auth import service
from mailer.auth.schemas import KeyCreate
from mailer.cli.common import cli_session, run, settings_or_exit
from mailer.cli.help import Command, new_app
from mailer.errors import NotFound, validation_details

app = new_app("Manage API keys.")


def create_key_command(name: str, admin: bool) -> None:
    """The name is held to the API's rules (POST /admin/keys)."""
    settings = settings_or_exit()
    try:
        name = KeyCreate.model_validate({"name": name}).name
    except ValidationError as exc:
        problem = validation_details(exc.errors())[0]["message"]
        typer.echo(f"Invalid NAME: {problem}.", err=True)
        raise typer.Exit(2) from None

    async def go() -> service.CreatedKey:
        async with cli_session(settings) as session:
            return await service.create_key(session, name, admin=admin)

    created = run(go)
    scope = "admin + send" if admin else "send"
    typer.echo(f"Created API key {created.key.id} ({name!r}, scopes: {scope}).")
    typer.echo("Key (shown only once, store it now):")
    typer.echo(created.secret)


@app.command("create", cls=Command)
def create(
    name: str = typer.Argument(..., metavar="NAME", help="A name to recognise the key by."),
    admin: bool = typer.Option(False, "--admin", help="Grant the admin scope (includes send)."),
) -> None:
    """Create an API key and print it once."""
    create_key_command(name, admin)


@app.command("list", cls=Command)
def list_keys(
    limit: int = typer.Option(100, min=1, max=1000, metavar="N", help="At most N keys."),
    offset: int = typer.Option(0, min=0, metavar="N", help="Skip the first N keys."),
) -> None:
    """List API keys (never the keys themselves)."""
    settings = settings_or_exit()

    async def go() -> None:
        async with cli_session(settings) as session:
            rows, total = await service.list_keys(session, limit=limit, offset=offset)
        typer.echo(f"{'ID':26}  {'PREFIX':8}  {'SCOPES':10}  {'USES':>6}  {'STATE':8}  NAME")
        for key in rows:
            state = "revoked" if key.revoked_at else "active"
            typer.echo(
                f"{key.id:26}  {key.prefix:8}  {key.scopes:10}  {key.usage_count:>6}  "
                f"{state:8}  {key.name}"
            )
        typer.echo(f"{total} key(s)")

    run(go)


@app.command("revoke", cls=Command)
def revoke(
    key_id: str = typer.Argument(..., metavar="ID", help="The key's id (from `mailer keys list`)."),
) -> None:
    """Revoke a key: it stops working on the next request."""
    settings = settings_or_exit()

    async def go() -> None:
        async with cli_session(settings) as session:
            await service.revoke_key(session, key_id)

    try:
        run(go)
    except NotFound as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Revoked {key_id}.")
