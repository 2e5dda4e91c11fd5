"""`mailer webhooks list|create|delete|test|replay`: outbound webhook endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import typer

from mailer.cli.common import cli_session, run, settings_or_exit
from mailer.cli.help import Command, new_app
from mailer.errors import MailerError
from mailer.webhook_endpoints import service
from mailer.webhook_endpoints.catalog import EVENT_TYPES

app = new_app("Manage outbound webhook endpoints (events pushed to your application).")
T = TypeVar("T")


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run; a refusal (unknown endpoint, bad URL) is its message and exit 1."""
    try:
        return run(fn)
    except MailerError as exc:
        typer.echo(exc.message, err=True)
        for detail in exc.details:
            typer.echo(f"  {detail.get('field', '')}: {detail.get('message', '')}", err=True)
        raise typer.Exit(1) from None


@app.command("list", cls=Command)
def list_command() -> None:
    """List endpoints."""
    settings = settings_or_exit()

    async def go() -> None:
        async with cli_session(settings) as session:
            rows, total = await service.list_endpoints(session, limit=1000, offset=0)
        typer.echo(f"{'ID':26}  {'STATE':8}  {'EVENTS':20}  URL")
        for row in rows:
            state = "enabled" if row.enabled else "disabled"
            events = ",".join(row.events) if row.events else "all"
            typer.echo(f"{row.id:26}  {state:8}  {events[:20]:20}  {row.url}")
            if row.disabled_reason:
                typer.echo(f"{'':26}  disabled: {row.disabled_reason}")
        typer.echo(f"{total} endpoint(s)")

    _run(go)


@app.command("create", cls=Command)
def create_command(
    url: str = typer.Argument(..., metavar="URL", help="The receiver's http(s) URL."),
    events: list[str] = typer.Option(
        [],
        "--event",
        metavar="TYPE",
        help="An event type to send (repeat for more; none = every type). One of: "
        + ", ".join(EVENT_TYPES)
        + ".",
    ),
    description: str = typer.Option("", metavar="TEXT", help="A note for people."),
) -> None:
    """Add an endpoint; prints its signing secret (shown only now)."""
    settings = settings_or_exit()

    async def go() -> tuple[str, str]:
        async with cli_session(settings) as session:
            endpoint = await service.create(
                session, settings, url=url, events=events, description=description
            )
            return endpoint.id, endpoint.secret

    endpoint_id, secret = _run(go)
    typer.echo(f"Created endpoint {endpoint_id}.")
    typer.echo(f"Signing secret (shown only now): {secret}")


@app.command("delete", cls=Command)
def delete_command(
    endpoint_id: str = typer.Argument(..., metavar="ID", help="From `mailer webhooks list`."),
) -> None:
    """Delete an endpoint and its delivery log."""
    settings = settings_or_exit()

    async def go() -> None:
        async with cli_session(settings) as session:
            await service.delete(session, endpoint_id)

    _run(go)
    typer.echo(f"Deleted {endpoint_id}.")


@app.command("test", cls=Command)
def send_test_command(
    endpoint_id: str = typer.Argument(..., metavar="ID", help="From `mailer webhooks list`."),
) -> None:
    """Send a webhook.test event now; exit 1 unless the receiver answers 2xx."""
    settings = settings_or_exit()

    async def go() -> service.TestResult:
        async with cli_session(settings) as session:
            return await service.send_test(session, settings, endpoint_id)

    result = _run(go)
    status = result.status_code if result.status_code is not None else "-"
    typer.echo(f"{result.event_id}: status {status}, {result.latency_ms} ms")
    if not result.success:
        typer.echo(f"Not delivered: {result.error}", err=True)
        raise typer.Exit(1)


@app.command("replay", cls=Command)
def replay_command(
    endpoint_id: str = typer.Argument(..., metavar="ID", help="From `mailer webhooks list`."),
    delivery_id: int | None = typer.Option(
        None, "--delivery", metavar="N", help="Replay this one delivery (from the log)."
    ),
    since: datetime | None = typer.Option(
        None, "--failed-since", metavar="TIME", help="Replay every delivery failed since TIME."
    ),
) -> None:
    """Deliver events again (same webhook-id): one delivery, or every failed one since a
    time (ISO 8601, UTC if no offset)."""
    if (delivery_id is None) == (since is None):
        typer.echo("Give --delivery N or --failed-since TIME.", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit()

    async def go() -> int:
        async with cli_session(settings) as session:
            if delivery_id is not None:
                await service.replay(session, endpoint_id, delivery_id)
                return 1
            assert since is not None
            return await service.replay_failed(session, endpoint_id, since)

    count = _run(go)
    typer.echo(f"Replaying {count} delivery(ies); a worker sends them.")
