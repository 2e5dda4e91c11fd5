"""API shapes of a domain check report (camelCase)."""

from __future__ import annotations

from mailer.domains.dns_check import Status
from mailer.schemas import ResponseModel


class CheckResultOut(ResponseModel):
    name: str
    status: Status
    found: list[str]
    message: str
    fix: str | None = None


class DomainReportOut(ResponseModel):
    domain: str
    status: Status  # the worst of the checks
    ok: bool  # no check failed
    checks: list[CheckResultOut]
    notes: list[str]
