"""`mailer send`: one email from the terminal, through the same service as POST /emails."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import typer
from pydantic import ValidationError

from mailer.cli.common import cli_session, run, settings_or_exit
from mailer.config import Settings
from mailer.db.reads import Reads
from mailer.emails import lookup
from mailer.emails import service as emails
from mailer.emails.schemas import EmailCreate
from mailer.errors import MailerError, validation_details
from mailer.queue.factory import build_queue

FINAL = frozenset(
    {"SENT", "DELIVERED", "BOUNCED", "COMPLAINED", "FAILED", "SUPPRESSED", "CANCELLED"}
)
GOOD = frozenset({"SENT", "DELIVERED"})
POLL_S = 0.5


def _variables(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            typer.echo(f"--var {pair!r}: expected name=value", err=True)
            raise typer.Exit(2)
        out[name] = value
    return out


def _refused(problem: str, details: list[dict[str, Any]]) -> None:
    typer.echo(f"Not sent: {problem}", err=True)
    for detail in details:
        typer.echo(f"  {detail.get('field', '')}: {detail.get('message', '')}", err=True)
    raise typer.Exit(2)


async def _wait(settings: Settings, message_ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while True:
        async with cli_session(settings) as session:
            for message_id in message_ids:
                found = await lookup.get_message(
                    Reads.of_session(session), message_id, mail_from=settings.mail_from
                )
                statuses[message_id] = str(found["status"])
        if all(s in FINAL for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(POLL_S)


def send_command(
    to: list[str] = typer.Option(..., "--to", metavar="ADDRESS", help="Recipient; repeatable."),
    subject: str | None = typer.Option(
        None, metavar="SUBJECT", help="Subject (with --html/--text)."
    ),
    html: str | None = typer.Option(
        None, metavar="HTML", help="HTML body; variables (--var) fill its placeholders."
    ),
    text: str | None = typer.Option(
        None, metavar="TEXT", help="Plain-text body (derived from --html if unset)."
    ),
    template: str | None = typer.Option(None, metavar="TEMPLATE_ID", help="Send a template."),
    var: list[str] = typer.Option([], "--var", metavar="NAME=VALUE", help="Variable; repeatable."),
    sender: str | None = typer.Option(
        None, "--from", metavar="ADDRESS", help="From (default MAIL_FROM)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the email to a final status."),
    timeout: float = typer.Option(300, metavar="SECONDS", help="How long --wait waits."),
) -> None:
    """Send one email now (the transactional lane) and print its message id per address.
    With --wait, print the final status too: exit 0 when sent, 1 otherwise. A running
    worker sends it (`mailer dev` or `mailer worker`)."""
    settings = settings_or_exit()
    fields: dict[str, Any] = {
        "to": to,
        "subject": subject,
        "html": html,
        "text": text,
        "template_id": template,
        "variables": _variables(var),
        "from": sender,
    }
    given = {k: v for k, v in fields.items() if v is not None}
    try:
        body = EmailCreate.model_validate(given)
    except ValidationError as exc:
        _refused("invalid input.", validation_details(exc.errors(), given))
        return

    async def go() -> list[dict[str, str]]:
        queue = build_queue(settings)
        try:
            async with cli_session(settings) as session:
                result = await emails.create_emails(
                    session,
                    None,
                    body,
                    body_hash="",
                    idempotency_key=None,
                    chunk_size=settings.chunk_size,
                    queue=queue,
                )
        finally:
            await queue.close()
        data: list[dict[str, str]] = result.response["data"]
        return data

    try:
        data = run(go)
    except MailerError as exc:
        _refused(exc.message, exc.details)
        return
    for item in data:
        typer.echo(f"{item['id']}\t{item['to']}\t{item['status']}")
    if not wait:
        return
    statuses = run(lambda: _wait(settings, [item["id"] for item in data], timeout))
    for message_id, status in statuses.items():
        typer.echo(f"{message_id}\t{status}")
    if not all(s in GOOD for s in statuses.values()):
        raise typer.Exit(1)
