"""`mailer domain setup|check`: authenticate a sending domain (SES identity, SPF, DKIM, DMARC)."""

from __future__ import annotations

import json

import dns.asyncresolver
import typer

from mailer.cli.common import run, settings_or_exit
from mailer.cli.help import Command, new_app
from mailer.config import Settings, TransportName
from mailer.domains.dns_check import (
    CheckResult,
    DomainReport,
    InvalidName,
    ResolverUnavailable,
    domain_exists,
    make_resolver,
    normalize_domain,
    normalize_selector,
)
from mailer.domains.schemas import DomainReportOut
from mailer.domains.service import check_configured_domain
from mailer.domains.ses_identity import DomainSetup, SesIdentityError, setup_domain

app = new_app("Set up and check a sending domain (SES identity, SPF, DKIM, DMARC, MX).")

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


@app.command("setup", cls=Command)
def setup(
    domain: str = typer.Argument(
        ..., metavar="DOMAIN", help="The domain mail is sent from, e.g. example.com."
    ),
    mail_from: str = typer.Option(
        "mail",
        "--mail-from",
        metavar="SUBDOMAIN",
        help="Custom MAIL FROM subdomain (where bounces go).",
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
        # A lookup DNS did not answer says nothing about the domain: not FAIL.
        label = "?" if check.lookup_failed else check.status.upper()
        typer.echo(f"{label:4}  {check.name:{width}}  {check.message}")
        indent = " " * (width + 8)
        for found in check.found:
            typer.echo(f"{indent}found: {_clip(found)}")
        if check.fix and check.status != "pass":
            for number, line in enumerate(check.fix.splitlines()):
                typer.echo(f"{indent}{'fix:   ' if number == 0 else '       '}{line}")
    for note in report.notes:
        typer.echo(f"note: {note}")
    known = [c for c in report.checks if not c.lookup_failed]
    counts = {s: sum(c.status == s for c in known) for s in ("pass", "warn", "fail")}
    unknown = len(report.checks) - len(known)
    typer.echo(
        f"{counts['pass']} passed, {counts['warn']} warning(s), {counts['fail']} failed"
        + (f", {unknown} unknown (DNS did not answer)." if unknown else ".")
    )


EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DNS_UNAVAILABLE = 3


async def _check(
    settings: Settings,
    domain: str,
    selectors: list[str] | None,
    resolver: dns.asyncresolver.Resolver,
) -> DomainReport:
    name = normalize_domain(domain)
    for selector in selectors or ():
        normalize_selector(selector)  # bad input is exit 2 before any lookup
    exists = await domain_exists(resolver, name)
    if exists.error:
        message = f"Could not ask DNS about {name}: {exists.error}."
        return DomainReport(name, [CheckResult("DNS", "fail", [], message, lookup_failed=True)])
    if not exists.records:
        message = (
            f"{name} does not resolve: DNS has no such domain (NXDOMAIN). Check the "
            "spelling, or that the domain is registered and its zone published."
        )
        return DomainReport(name, [CheckResult("DNS", "fail", [], message)])
    return await check_configured_domain(settings, name, selectors=selectors, resolver=resolver)


@app.command("check", cls=Command)
def check(
    domain: str = typer.Argument(..., metavar="DOMAIN", help="The domain mail is sent from."),
    selector: list[str] | None = typer.Option(
        None, "--selector", "-s", metavar="SELECTOR", help="DKIM selector to check (repeatable)."
    ),
    nameserver: list[str] | None = typer.Option(
        None,
        "--nameserver",
        metavar="IP[:PORT]",
        help="Ask this DNS server (repeatable); default: the system's resolver.",
    ),
    timeout: float = typer.Option(
        5.0, min=0.1, metavar="SECONDS", help="Time allowed for each DNS lookup."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check SPF, DKIM, DMARC and MX records of a sending domain.

    \b
    Exit codes:
      0  every check passed (warnings allowed)
      1  a check failed, or the domain does not resolve
      2  bad input (domain, selector or nameserver)
      3  DNS did not answer (timeouts, SERVFAIL): nothing is known about the domain
    """
    settings = settings_or_exit()
    try:
        resolver = make_resolver(nameserver or None, timeout=timeout)
    except (ValueError, ResolverUnavailable) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    try:
        report = run(lambda: _check(settings, domain, selector or None, resolver))
    except InvalidName as exc:
        typer.echo(f"Invalid input: {exc}.", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        out = DomainReportOut.model_validate(report).model_dump(mode="json", by_alias=True)
        typer.echo(json.dumps(out, indent=2))
    else:
        print_report(report)
    if report.ok:
        raise typer.Exit(0)
    raise typer.Exit(EXIT_DNS_UNAVAILABLE if report.only_lookups_failed else EXIT_CHECK_FAILED)
