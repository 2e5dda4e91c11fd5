"""Sending domain: `mailer domain check` for the domain of MAIL_FROM, and what to publish."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import dns.asyncresolver
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from mailer.console.rendering import render_page
from mailer.console.site import User, host_state
from mailer.domains.dns_check import InvalidName, ResolverUnavailable, make_resolver
from mailer.domains.service import check_configured_domain

router = APIRouter()


def resolver_factory() -> Callable[[], dns.asyncresolver.Resolver]:
    """How the page gets its resolver: the system's (a dependency, so that a test can point
    the page at its own DNS server). Called inside the page, which shows a missing resolver
    configuration as a message."""
    return make_resolver


def configured_domain(mail_from: str) -> str:
    address = mail_from.rsplit("<", 1)[-1].rstrip(">").strip()
    return address.rpartition("@")[2].lower()


@router.get("/domain")
async def domain_page(
    request: Request,
    user: User,
    new_resolver: Annotated[Callable[[], dns.asyncresolver.Resolver], Depends(resolver_factory)],
    domain: Annotated[str | None, Query(max_length=253)] = None,
) -> Response:
    settings = host_state(request).settings
    name = (domain or "").strip() or configured_domain(settings.mail_from)
    context: dict[str, object] = {"title": "Sending domain", "domain": name, "report": None}
    try:
        report = await check_configured_domain(settings, name, resolver=new_resolver())
    except (InvalidName, ResolverUnavailable) as exc:
        context["error"] = str(exc)
    else:
        context["report"] = report
    return render_page(request, "domain.html", context)
