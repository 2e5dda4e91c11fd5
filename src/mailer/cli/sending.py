"""`mailer sending status|pause|resume` (the reputation guard)."""

from __future__ import annotations

import typer

from mailer.cli.common import cli_session, run, settings_or_exit
from mailer.cli.help import Command, new_app
from mailer.reputation import service

app = new_app("See, pause and resume bulk sending.")


def _print(state: service.PauseState) -> None:
    if state.paused:
        typer.echo(
            f"Bulk sending is PAUSED since {state.since:%Y-%m-%d %H:%M:%S} UTC: {state.reason}"
        )
    else:
        typer.echo("Bulk sending is running.")


@app.command("status", cls=Command)
def status() -> None:
    """Show whether bulk sending is paused, and why."""
    settings = settings_or_exit()

    async def go() -> service.PauseState:
        async with cli_session(settings) as session:
            return await service.current(session)

    _print(run(go))


@app.command("pause", cls=Command)
def pause(
    reason: str = typer.Option("paused by an operator", metavar="TEXT", help="Why."),
) -> None:
    """Pause bulk sending now (transactional batches keep going)."""
    settings = settings_or_exit()

    async def go() -> service.PauseState:
        async with cli_session(settings) as session:
            return await service.pause(session, reason, by="cli")

    _print(run(go))


@app.command("resume", cls=Command)
def resume() -> None:
    """Resume bulk sending after a pause. Only sends after now are judged."""
    settings = settings_or_exit()

    async def go() -> service.PauseState:
        async with cli_session(settings) as session:
            return await service.resume(session, by="cli")

    _print(run(go))
