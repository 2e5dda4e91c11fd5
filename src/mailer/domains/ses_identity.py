"""The SES side of a sending domain: its identity (Easy DKIM) and custom MAIL FROM domain.

Same client configuration as the SES transport (endpoint_url, region, credentials from
Settings). `setup_domain` is idempotent: it creates the identity only when SES has none,
sets MAIL FROM only when it differs, and always answers the DNS records to publish.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from mailer.config import Settings
from mailer.domains.dns_check import SES_SPF, normalize_domain

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0


class SesIdentityError(Exception):
    """SES could not be reached or refused the request; str() says why."""


@dataclass(frozen=True)
class DnsRecord:
    type: str  # CNAME, TXT or MX
    name: str  # fully qualified, without the final dot
    value: str  # as in a zone file (TXT unquoted)
    purpose: str

    def zone_line(self, ttl: int = 3600) -> str:
        value = f'"{self.value}"' if self.type == "TXT" else self.value
        return f"{self.name}. {ttl} IN {self.type} {value}"


@dataclass(frozen=True)
class SesIdentity:
    domain: str
    verified: bool  # VerifiedForSendingStatus
    dkim_status: str | None  # PENDING, SUCCESS, FAILED, TEMPORARY_FAILURE, NOT_STARTED
    dkim_tokens: list[str]
    mail_from_domain: str | None
    mail_from_status: str | None  # PENDING, SUCCESS, FAILED, TEMPORARY_FAILURE


@dataclass(frozen=True)
class DomainSetup:
    identity: SesIdentity
    created: bool  # this run created the identity
    mail_from_updated: bool  # this run set the MAIL FROM domain
    records: list[DnsRecord]
    warnings: list[str] = field(default_factory=list)


def _client_kwargs(settings: Settings, attempts: int) -> dict[str, Any]:
    config = AioConfig(
        region_name=settings.aws_region,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"total_max_attempts": attempts, "mode": "standard"},
    )
    kwargs: dict[str, Any] = {
        "region_name": settings.aws_region,
        "endpoint_url": settings.aws_endpoint_url,
        "config": config,
    }
    if settings.aws_access_key_id is not None and settings.aws_secret_access_key is not None:
        kwargs["aws_access_key_id"] = settings.aws_access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
    return kwargs


@asynccontextmanager
async def ses_client(settings: Settings, *, attempts: int = 3) -> AsyncIterator[Any]:
    """An sesv2 client; every SES or connection failure inside becomes SesIdentityError."""
    try:
        async with get_session().create_client(
            "sesv2", **_client_kwargs(settings, attempts)
        ) as client:
            yield client
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message", "")).strip()
        if message.startswith("<"):  # an HTML error page, not an SES answer
            message = "unexpected answer"
        raise SesIdentityError(f"SES {code}: {message}" if message else f"SES {code}") from exc
    except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SesIdentityError(f"SES request failed: {exc}") from exc


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _identity(domain: str, response: dict[str, Any]) -> SesIdentity:
    dkim = response.get("DkimAttributes") or {}
    mail_from = response.get("MailFromAttributes") or {}
    mail_from_domain = mail_from.get("MailFromDomain") or None
    return SesIdentity(
        domain=domain,
        verified=bool(response.get("VerifiedForSendingStatus")),
        dkim_status=dkim.get("Status"),
        dkim_tokens=[str(t) for t in dkim.get("Tokens") or []],
        mail_from_domain=str(mail_from_domain).lower() if mail_from_domain else None,
        mail_from_status=mail_from.get("MailFromDomainStatus") if mail_from_domain else None,
    )


async def _get(client: Any, domain: str) -> SesIdentity | None:
    try:
        response = await client.get_email_identity(EmailIdentity=domain)
    except ClientError as exc:
        if _error_code(exc) == "NotFoundException":
            return None
        raise
    return _identity(domain, response)


async def get_identity(settings: Settings, domain: str, *, attempts: int = 3) -> SesIdentity | None:
    """SES's identity for `domain`, or None when SES has none. Raises SesIdentityError."""
    domain = normalize_domain(domain)
    async with ses_client(settings, attempts=attempts) as client:
        return await _get(client, domain)


def dns_records(
    domain: str, *, dkim_tokens: list[str], mail_from_domain: str | None, region: str
) -> list[DnsRecord]:
    """The records a domain sending through SES publishes."""
    records = [
        DnsRecord(
            "CNAME",
            f"{token}._domainkey.{domain}",
            f"{token}.dkim.amazonses.com.",
            "DKIM (SES Easy DKIM)",
        )
        for token in dkim_tokens
    ]
    records.append(DnsRecord("TXT", domain, SES_SPF, "SPF"))
    dmarc = f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{domain}"
    records.append(DnsRecord("TXT", f"_dmarc.{domain}", dmarc, "DMARC"))
    if mail_from_domain:
        feedback = f"10 feedback-smtp.{region}.amazonses.com."
        records.append(DnsRecord("MX", mail_from_domain, feedback, "MAIL FROM (bounces to SES)"))
        records.append(DnsRecord("TXT", mail_from_domain, SES_SPF, "MAIL FROM SPF"))
    return records


def mail_from_domain_for(domain: str, subdomain: str) -> str:
    """`mail` → mail.<domain>; a name already ending in .<domain> is taken as is."""
    name = subdomain.strip().rstrip(".").lower()
    if not name.endswith(f".{domain}"):
        name = f"{name}.{domain}"
    return normalize_domain(name)


async def setup_domain(
    settings: Settings, domain: str, *, mail_from_subdomain: str | None = "mail"
) -> DomainSetup:
    """Ensure SES has an Easy DKIM identity for `domain` (and the MAIL FROM domain
    `<mail_from_subdomain>.<domain>` unless None); return the records to publish.

    Raises InvalidName for a bad domain or subdomain, SesIdentityError when SES fails."""
    domain = normalize_domain(domain)
    wanted_mail_from = (
        mail_from_domain_for(domain, mail_from_subdomain) if mail_from_subdomain else None
    )
    warnings: list[str] = []
    created = mail_from_updated = False
    async with ses_client(settings) as client:
        identity = await _get(client, domain)
        if identity is None:
            try:
                await client.create_email_identity(EmailIdentity=domain)
                created = True
            except ClientError as exc:
                # Created meanwhile by someone else: read it like any existing identity.
                if _error_code(exc) != "AlreadyExistsException":
                    raise
        if wanted_mail_from and (identity is None or identity.mail_from_domain != wanted_mail_from):
            try:
                await client.put_email_identity_mail_from_attributes(
                    EmailIdentity=domain,
                    MailFromDomain=wanted_mail_from,
                    BehaviorOnMxFailure="USE_DEFAULT_VALUE",
                )
                mail_from_updated = True
            except ClientError as exc:
                warnings.append(
                    f"SES did not accept the MAIL FROM domain {wanted_mail_from} "
                    f"({_error_code(exc) or exc}): mail keeps amazonses.com as MAIL FROM."
                )
        if identity is None or mail_from_updated:
            identity = await _get(client, domain)
    if identity is None:
        raise SesIdentityError(f"SES has no identity for {domain} right after creating it")
    if not identity.dkim_tokens:
        warnings.append(
            "SES returned no Easy DKIM tokens (the identity may use a DKIM key of its own, or "
            "SES has not generated them yet): run setup again in a minute."
        )
    mail_from = identity.mail_from_domain or (wanted_mail_from if mail_from_updated else None)
    records = dns_records(
        domain,
        dkim_tokens=identity.dkim_tokens,
        mail_from_domain=mail_from,
        region=settings.aws_region,
    )
    return DomainSetup(
        identity=identity,
        created=created,
        mail_from_updated=mail_from_updated,
        records=records,
        warnings=warnings,
    )
