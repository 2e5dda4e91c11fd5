"""`mailer domain setup|check`: authenticate a sending domain (SES identity, SPF, DKIM, DMARC)."""

from __future__ import annotations

import json

import typer

from mailer.cli.common import run, settings_or_exit
from mailer.config import TransportName
from mailer.domains.dns_check import (
    DomainReport,
    InvalidName,
    ResolverUnavailable,
    make_resolver,
)
from mailer.domains.schemas import DomainReportOut
from mailer.domains.service import check_configured_domain
from mailer.domains.ses_identity import DomainSetup, SesIdentityError, setup_domain

app = typer.Typer(
    help="Set up and check a sending domain (SES identity, SPF, DKIM, DMARC, MX).",
    no_args_is_help=True,
)

_FOUND_WIDTH = 110


def _status_word(value: str | None) -> str:
    return (value or "unknown").replace("_", " ").lower()


def print_setup(setup: DomainSetup) -> None:
    identity = setup.identity
    domain = identity.domain
    state = "created" if setup.created else "already existed"
    typer.echo(f"SES identity {domain}: {state}.")
    typer.echo(f"  verified for sending: {'yes' if identity.verified else 'not yet'}")
    typer.echo(f"  DKIM: {_status_word(identity.dkim_status)}")
    if identity.mail_from_domain:
        status = _status_word(identity.mail_from_status)
        typer.echo(f"  MAIL FROM: {identity.mail_from_domain} ({status})")
    typer.echo("")
    typer.echo(f"Publish these records in the DNS zone of {domain}:")
    typer.echo("")
    width = max(len(r.name) + 1 for r in setup.records)
    purpose = None
    for record in setup.records:
        if record.purpose != purpose:
            purpose = record.purpose
            typer.echo(f"; {purpose}")
        value = f'"{record.value}"' if record.type == "TXT" else record.value
        typer.echo(f"{record.name + '.':{width}}  3600  IN  {record.type:5}  {value}")
    for warning in setup.warnings:
        typer.echo(f"\nwarning: {warning}")
    typer.echo("")
    typer.echo(
        "If the domain already has an SPF record (TXT v=spf1), add include:amazonses.com to "
        "it instead of publishing a second one."
    )
    typer.echo(
        f"Next: publish the records, then run `mailer domain check {domain}` until every "
        "check passes; SES verifies the domain by itself once the DKIM records resolve "
        "(minutes, up to 72 hours)."
    )


@app.command("setup")
def setup(
    domain: str = typer.Argument(..., help="The domain mail is sent from, e.g. example.com."),
    mail_from: str = typer.Option(
        "mail", "--mail-from", help="Custom MAIL FROM subdomain (where bounces go)."
    ),
    no_mail_from: bool = typer.Option(
        False, "--no-mail-from", help="Keep SES's default MAIL FROM (amazonses.com)."
    ),
) -> None:
    """Create the SES identity (Easy DKIM) and print the DNS records to publish."""
    settings = settings_or_exit()
    if settings.mail_transport is not TransportName.SES:
        typer.echo(
            f"note: MAIL_TRANSPORT is {settings.mail_transport.value}; this sets the domain up "
            "for sending through SES.",
            err=True,
        )
    subdomain = None if no_mail_from or not mail_from.strip() else mail_from
    try:
        result = run(lambda: setup_domain(settings, domain, mail_from_subdomain=subdomain))
    except InvalidName as exc:
        typer.echo(f"Invalid domain: {exc}.", err=True)
        raise typer.Exit(2) from None
    except SesIdentityError as exc:
        typer.echo(f"SES setup failed: {exc}", err=True)
        raise typer.Exit(1) from None
    print_setup(result)


def _clip(text: str) -> str:
    return text if len(text) <= _FOUND_WIDTH else text[: _FOUND_WIDTH - 3] + "..."


def print_report(report: DomainReport) -> None:
    typer.echo(f"Domain {report.domain}")
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        typer.echo(f"{check.status.upper():4}  {check.name:{width}}  {check.message}")
        indent = " " * (width + 8)
        for found in check.found:
            typer.echo(f"{indent}found: {_clip(found)}")
        if check.fix and check.status != "pass":
            for number, line in enumerate(check.fix.splitlines()):
                typer.echo(f"{indent}{'fix:   ' if number == 0 else '       '}{line}")
    for note in report.notes:
        typer.echo(f"note: {note}")
    counts = {s: sum(c.status == s for c in report.checks) for s in ("pass", "warn", "fail")}
    typer.echo(f"{counts['pass']} passed, {counts['warn']} warning(s), {counts['fail']} failed.")


@app.command("check")
def check(
    domain: str = typer.Argument(..., help="The domain mail is sent from."),
    selector: list[str] | None = typer.Option(
        None, "--selector", "-s", help="DKIM selector to check (repeatable)."
    ),
    nameserver: list[str] | None = typer.Option(
        None, "--nameserver", help="Ask this DNS server, IP[:PORT] (repeatable)."
    ),
    timeout: float = typer.Option(5.0, min=0.1, help="Seconds per DNS lookup."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check SPF, DKIM, DMARC and MX; exit code 1 when any check fails."""
    settings = settings_or_exit()
    try:
        resolver = make_resolver(nameserver or None, timeout=timeout)
    except (ValueError, ResolverUnavailable) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    try:
        report = run(
            lambda: check_configured_domain(
                settings, domain, selectors=selector or None, resolver=resolver
            )
        )
    except InvalidName as exc:
        typer.echo(f"Invalid input: {exc}.", err=True)
        raise typer.Exit(2) from None
    if as_json:
        out = DomainReportOut.model_validate(report).model_dump(mode="json", by_alias=True)
        typer.echo(json.dumps(out, indent=2))
    else:
        print_report(report)
    raise typer.Exit(0 if report.ok else 1)
