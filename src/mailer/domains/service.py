"""`check_configured_domain`, what the CLI and the API run: the DNS checks, fed with what
the configuration and (when sending through SES) the SES identity know about the domain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import dns.asyncresolver

from mailer.config import Settings, TransportName
from mailer.domains.dns_check import (
    DomainReport,
    check_domain,
    normalize_domain,
    normalize_selector,
)
from mailer.domains.ses_identity import SesIdentityError, get_identity


def default_selectors(settings: Settings, domain: str) -> list[str]:
    """DKIM_SELECTOR applies when mailer signs itself (smtp/outbox) for this domain."""
    if settings.mail_transport is TransportName.SES or not settings.dkim_selector:
        return []
    if settings.dkim_domain and normalize_domain(settings.dkim_domain) != domain:
        return []
    return [settings.dkim_selector]


async def check_configured_domain(
    settings: Settings,
    domain: str,
    *,
    selectors: Sequence[str] | None = None,
    resolver: dns.asyncresolver.Resolver | None = None,
) -> DomainReport:
    """Check `domain`'s DNS. With MAIL_TRANSPORT=ses, the SES identity's DKIM tokens and
    MAIL FROM domain are checked too, when SES answers (otherwise a note says why not).

    Raises InvalidName for a bad domain or selector."""
    domain = normalize_domain(domain)
    chosen = [normalize_selector(s) for s in selectors or ()] or default_selectors(settings, domain)
    notes: list[str] = []
    tokens: list[str] = []
    mail_from: str | None = None
    region: str | None = None
    if settings.mail_transport is TransportName.SES:
        region = settings.aws_region
        try:
            identity = await get_identity(settings, domain, attempts=1)
        except SesIdentityError as exc:
            notes.append(f"SES identity not read ({exc}); DKIM checked by selector only.")
        else:
            if identity is None:
                notes.append(
                    f"SES has no identity for {domain}: run `mailer domain setup {domain}`."
                )
            else:
                tokens, mail_from = identity.dkim_tokens, identity.mail_from_domain
                verified = "verified" if identity.verified else "not verified yet"
                notes.append(
                    f"SES identity {domain}: {verified}, DKIM {identity.dkim_status or 'unknown'}"
                    + (f", MAIL FROM {mail_from} {identity.mail_from_status}" if mail_from else "")
                    + "."
                )
    report = await check_domain(
        domain,
        dkim_selectors=chosen,
        ses_dkim_tokens=tokens,
        mail_from_domain=mail_from,
        ses_region=region,
        resolver=resolver,
    )
    return replace(report, notes=[*notes, *report.notes])
