"""Sending domain: `mailer domain check` for the domain of MAIL_FROM, and what to publish."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from mailer.console.rendering import render_page
from mailer.console.site import User, host_state
from mailer.domains.dns_check import InvalidName, ResolverUnavailable, make_resolver
from mailer.domains.service import check_configured_domain

router = APIRouter()


def configured_domain(mail_from: str) -> str:
    address = mail_from.rsplit("<", 1)[-1].rstrip(">").strip()
    return address.rpartition("@")[2].lower()


@router.get("/domain")
async def domain_page(
    request: Request,
    user: User,
    domain: Annotated[str | None, Query(max_length=253)] = None,
) -> Response:
    settings = host_state(request).settings
    name = (domain or "").strip() or configured_domain(settings.mail_from)
    context: dict[str, object] = {"title": "Sending domain", "domain": name, "report": None}
    try:
        report = await check_configured_domain(settings, name, resolver=make_resolver())
    except (InvalidName, ResolverUnavailable) as exc:
        context["error"] = str(exc)
    else:
        context["report"] = report
    return render_page(request, "domain.html", context)
