"""setup_domain / check_configured_domain through the real aiobotocore client: moto's
server, and an SES-like identity server of the tests' own (moto has no DKIM tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from mailer.config import Settings, load_settings
from mailer.domains.dns_check import InvalidName, make_resolver
from mailer.domains.service import check_configured_domain
from mailer.domains.ses_identity import (
    SesIdentityError,
    get_identity,
    setup_domain,
)
from tests.fixtures.dns_server import DnsTestServer, closed_port, dns_server
from tests.fixtures.ses_identity_server import SesIdentityServer, zone_from_records
from tests.fixtures.ses_server import (
    SES_ACCESS_KEY,
    SES_REGION,
    SES_SECRET_KEY,
    MotoSes,
    start_moto,
    stop_moto,
)

__all__ = ["dns_server"]  # fixture

DOMAIN = "example.test"


def ses_settings(tmp_path: Path, endpoint: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "app_env": "test",
        "database_url": f"sqlite:///{tmp_path}/unused.db",
        "mail_transport": "ses",
        "aws_endpoint_url": endpoint,
        "aws_region": SES_REGION,
        "aws_access_key_id": SES_ACCESS_KEY,
        "aws_secret_access_key": SES_SECRET_KEY,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoSes]:
    server = start_moto()
    yield server
    stop_moto(server)


@pytest.fixture
def identity_server() -> Iterator[SesIdentityServer]:
    with SesIdentityServer() as server:
        yield server


async def test_setup_creates_the_identity_in_moto_and_is_idempotent(
    moto: MotoSes, tmp_path: Path
) -> None:
    settings = ses_settings(tmp_path, moto.url)
    domain = "moto-setup.test"
    first = await setup_domain(settings, domain, mail_from_subdomain=None)
    assert first.created
    async with get_session().create_client("sesv2", **moto.client_kwargs()) as client:
        stored = await client.get_email_identity(EmailIdentity=domain)
    assert stored["IdentityType"] == "DOMAIN"
    assert first.identity.domain == domain
    records = {(r.type, r.name): r.value for r in first.records}
    assert records[("TXT", domain)] == "v=spf1 include:amazonses.com ~all"
    assert records[("TXT", f"_dmarc.{domain}")] == (
        f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{domain}"
    )
    second = await setup_domain(settings, domain, mail_from_subdomain=None)
    assert not second.created
    assert second.records == first.records
    # moto generates no Easy DKIM tokens: setup says so rather than print no DKIM records.
    assert any("no Easy DKIM tokens" in w for w in second.warnings)


async def test_setup_returns_three_dkim_cnames_and_mail_from(
    identity_server: SesIdentityServer, tmp_path: Path
) -> None:
    settings = ses_settings(tmp_path, identity_server.url)
    setup = await setup_domain(settings, DOMAIN)
    tokens = identity_server.identities[DOMAIN].tokens
    assert setup.created
    assert setup.mail_from_updated
    assert setup.warnings == []
    assert setup.identity.dkim_tokens == tokens
    assert len(tokens) == 3
    assert [(r.type, r.name, r.value) for r in setup.records] == [
        *[("CNAME", f"{t}._domainkey.{DOMAIN}", f"{t}.dkim.amazonses.com.") for t in tokens],
        ("TXT", DOMAIN, "v=spf1 include:amazonses.com ~all"),
        ("TXT", f"_dmarc.{DOMAIN}", f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}"),
        ("MX", f"mail.{DOMAIN}", f"10 feedback-smtp.{SES_REGION}.amazonses.com."),
        ("TXT", f"mail.{DOMAIN}", "v=spf1 include:amazonses.com ~all"),
    ]
    assert setup.records[-1].zone_line() == (
        f'mail.{DOMAIN}. 3600 IN TXT "v=spf1 include:amazonses.com ~all"'
    )
    assert identity_server.identities[DOMAIN].mail_from == f"mail.{DOMAIN}"
    assert identity_server.identities[DOMAIN].behavior == "USE_DEFAULT_VALUE"


async def test_second_setup_only_reads(identity_server: SesIdentityServer, tmp_path: Path) -> None:
    settings = ses_settings(tmp_path, identity_server.url)
    first = await setup_domain(settings, DOMAIN)
    second = await setup_domain(settings, DOMAIN)
    assert not second.created
    assert not second.mail_from_updated
    assert second.records == first.records
    assert identity_server.operations("CreateEmailIdentity") == [DOMAIN]
    assert identity_server.operations("PutEmailIdentityMailFromAttributes") == [DOMAIN]
    # A different MAIL FROM subdomain is applied.
    third = await setup_domain(settings, DOMAIN, mail_from_subdomain="bounce")
    assert third.mail_from_updated
    assert third.identity.mail_from_domain == f"bounce.{DOMAIN}"


async def test_rejected_mail_from_is_a_warning(
    identity_server: SesIdentityServer, tmp_path: Path
) -> None:
    identity_server.reject_mail_from = True
    setup = await setup_domain(ses_settings(tmp_path, identity_server.url), DOMAIN)
    assert setup.created
    assert not setup.mail_from_updated
    assert any("BadRequestException" in w for w in setup.warnings)
    assert all(r.name != f"mail.{DOMAIN}" for r in setup.records)


async def test_setup_validates_names(identity_server: SesIdentityServer, tmp_path: Path) -> None:
    settings = ses_settings(tmp_path, identity_server.url)
    with pytest.raises(InvalidName):
        await setup_domain(settings, "not a domain")
    with pytest.raises(InvalidName):
        await setup_domain(settings, DOMAIN, mail_from_subdomain="bad_sub")
    assert identity_server.calls == []


async def test_unreachable_ses_raises(tmp_path: Path) -> None:
    settings = ses_settings(tmp_path, f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(SesIdentityError, match="SES request failed"):
        await setup_domain(settings, DOMAIN)
    with pytest.raises(SesIdentityError):
        await get_identity(settings, DOMAIN, attempts=1)


async def test_records_from_setup_pass_the_check(
    identity_server: SesIdentityServer, dns_server: DnsTestServer, tmp_path: Path
) -> None:
    settings = ses_settings(tmp_path, identity_server.url)
    setup = await setup_domain(settings, DOMAIN)
    dns_server.zone = zone_from_records(setup.records)
    resolver = make_resolver([dns_server.address], timeout=3)
    report = await check_configured_domain(settings, DOMAIN, resolver=resolver)
    assert [(c.name, c.status) for c in report.checks] == [
        ("SPF", "pass"),
        ("DKIM (SES)", "pass"),
        ("DMARC", "pass"),
        ("MX", "warn"),  # setup publishes no inbound MX for the domain itself
        ("MAIL FROM MX", "pass"),
        ("MAIL FROM SPF", "pass"),
    ]
    assert report.notes == [
        f"SES identity {DOMAIN}: not verified yet, DKIM PENDING, MAIL FROM mail.{DOMAIN} PENDING."
    ]


async def test_check_without_ses_identity_notes_the_setup_command(
    identity_server: SesIdentityServer, dns_server: DnsTestServer, tmp_path: Path
) -> None:
    settings = ses_settings(tmp_path, identity_server.url)
    resolver = make_resolver([dns_server.address], timeout=3)
    report = await check_configured_domain(settings, DOMAIN, resolver=resolver)
    assert report.notes == [
        f"SES has no identity for {DOMAIN}: run `mailer domain setup {DOMAIN}`."
    ]
    assert [c.name for c in report.checks] == ["SPF", "DKIM", "DMARC", "MX"]


async def test_check_with_ses_unreachable_still_checks_dns(
    dns_server: DnsTestServer, tmp_path: Path
) -> None:
    settings = ses_settings(tmp_path, f"http://127.0.0.1:{closed_port()}")
    resolver = make_resolver([dns_server.address], timeout=3)
    report = await check_configured_domain(settings, DOMAIN, selectors=["s1"], resolver=resolver)
    assert [c.name for c in report.checks] == ["SPF", "DKIM (s1)", "DMARC", "MX"]
    assert len(report.notes) == 1
    assert report.notes[0].startswith("SES identity not read (SES request failed")


async def test_smtp_transport_checks_the_configured_selector(
    dns_server: DnsTestServer, tmp_path: Path
) -> None:
    settings = ses_settings(
        tmp_path,
        f"http://127.0.0.1:{closed_port()}",
        mail_transport="outbox",
        dkim_selector="mk1",
        dkim_domain=DOMAIN,
    )
    resolver = make_resolver([dns_server.address], timeout=3)
    report = await check_configured_domain(settings, DOMAIN, resolver=resolver)
    assert [c.name for c in report.checks] == ["SPF", "DKIM (mk1)", "DMARC", "MX"]
    assert report.notes == []
    other = await check_configured_domain(settings, "other.test", resolver=resolver)
    assert [c.name for c in other.checks] == ["SPF", "DKIM", "DMARC", "MX"]
