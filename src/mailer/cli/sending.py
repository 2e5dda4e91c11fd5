"""`mailer sending status|pause|resume` (the reputation guard)."""

from __future__ import annotations

import typer

from mailer.cli.common import cli_session, run, settings_or_exit
from mailer.reputation import service

app = typer.Typer(help="See, pause and resume bulk sending.", no_args_is_help=True)


def _print(state: service.PauseState) -> None:
    if state.paused:
        typer.echo(
            f"Bulk sending is PAUSED since {state.since:%Y-%m-%d %H:%M:%S} UTC: {state.reason}"
        )
    else:
        typer.echo("Bulk sending is running.")


@app.command("status")
def status() -> None:
    """Show whether bulk sending is paused, and why."""
    settings = settings_or_exit()

    async def go() -> service.PauseState:
        async with cli_session(settings) as session:
            return await service.current(session)

    _print(run(go))


@app.command("pause")
def pause(reason: str = typer.Option("paused by an operator", help="Why.")) -> None:
    """Pause bulk sending now (transactional batches keep going)."""
    settings = settings_or_exit()

    async def go() -> service.PauseState:
        async with cli_session(settings) as session:
            return await service.pause(session, reason, by="cli")

    _print(run(go))


@app.command("resume")
def resume() -> None:
    """Resume bulk sending after a pause. Only sends after now are judged."""
    settings = settings_or_exit()

    async def go() -> service.PauseState:
        async with cli_session(settings) as session:
            return await service.resume(session, by="cli")

    _print(run(go))
