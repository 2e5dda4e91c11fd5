"""/admin/domains: DNS authentication check of a sending domain."""

from __future__ import annotations

from typing import Annotated

import dns.asyncresolver
from fastapi import APIRouter, Depends, Query

from mailer.auth.dependencies import AdminKey
from mailer.deps import ApiRoute, State
from mailer.domains.dns_check import (
    InvalidName,
    ResolverUnavailable,
    make_resolver,
    normalize_domain,
    normalize_selector,
)
from mailer.domains.schemas import DomainReportOut
from mailer.domains.service import check_configured_domain
from mailer.errors import ServiceUnavailable, ValidationFailed

router = APIRouter(prefix="/admin/domains", tags=["admin"], route_class=ApiRoute)


async def get_resolver() -> dns.asyncresolver.Resolver:
    """The system resolver (a dependency, so a test can point it at its own DNS server)."""
    try:
        return make_resolver()
    except ResolverUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from None


Resolver = Annotated[dns.asyncresolver.Resolver, Depends(get_resolver)]


def _invalid(field: str, exc: InvalidName) -> ValidationFailed:
    return ValidationFailed(
        f"The request is not valid ({field}).",
        details=[{"field": field, "message": str(exc), "type": "value_error"}],
    )


@router.get("/{domain}/check", response_model=DomainReportOut)
async def check_domain(
    domain: str,
    _: AdminKey,
    state: State,
    resolver: Resolver,
    selector: Annotated[
        str | None, Query(max_length=200, description="DKIM selector to check")
    ] = None,
) -> DomainReportOut:
    """Check SPF, DKIM, DMARC and MX (and the SES MAIL FROM domain) of a sending domain."""
    try:
        domain = normalize_domain(domain)
    except InvalidName as exc:
        raise _invalid("path:domain", exc) from None
    try:
        selectors = [normalize_selector(selector)] if selector else None
    except InvalidName as exc:
        raise _invalid("query:selector", exc) from None
    report = await check_configured_domain(
        state.settings, domain, selectors=selectors, resolver=resolver
    )
    return DomainReportOut.model_validate(report)
