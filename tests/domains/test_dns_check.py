"""check_domain against a real DNS server (dnslib) on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest

from mailer.domains.dns_check import (
    DomainReport,
    InvalidName,
    check_domain,
    make_resolver,
    normalize_domain,
    normalize_selector,
    parse_nameserver,
)
from tests.fixtures.dns_server import (
    DnsTestServer,
    SilentUdp,
    Zone,
    closed_port,
    dns_server,
    silent_dns,
)
from tests.fixtures.dns_zones import DOMAIN, PUBLIC_KEY, REGION, TOKENS, full_zone

__all__ = ["dns_server", "silent_dns"]  # fixtures


async def run_check(server: DnsTestServer, zone: Zone, **kwargs: Any) -> DomainReport:
    server.zone = zone
    kwargs.setdefault("domain", DOMAIN)
    return await check_domain(resolver=make_resolver([server.address], timeout=3), **kwargs)


def by_name(report: DomainReport) -> dict[str, Any]:
    return {check.name: check for check in report.checks}


async def test_fully_configured_domain_passes_everything(dns_server: DnsTestServer) -> None:
    report = await run_check(
        dns_server,
        full_zone(),
        dkim_selectors=["s1"],
        ses_dkim_tokens=TOKENS,
        mail_from_domain=f"mail.{DOMAIN}",
        ses_region=REGION,
    )
    checks = by_name(report)
    assert list(checks) == [
        "SPF",
        "DKIM (SES)",
        "DKIM (s1)",
        "DMARC",
        "MX",
        "MAIL FROM MX",
        "MAIL FROM SPF",
    ]
    assert {c.name: c.status for c in report.checks} == dict.fromkeys(checks, "pass")
    assert report.status == "pass"
    assert report.ok
    assert checks["SPF"].found == ["v=spf1 include:amazonses.com ~all"]
    assert checks["MX"].found == [f"10 mx1.{DOMAIN}.", f"20 mx2.{DOMAIN}."]
    # The 2048-bit key is longer than one TXT string: the parts are joined.
    assert checks["DKIM (s1)"].found == [f"v=DKIM1; k=rsa; p={PUBLIC_KEY}"]
    assert all(check.fix is None for check in report.checks)
    assert (f"{TOKENS[0]}._domainkey.{DOMAIN}", "CNAME") in dns_server.queries


async def test_bare_domain_names_each_missing_record_with_its_fix(
    dns_server: DnsTestServer,
) -> None:
    report = await run_check(
        dns_server,
        {DOMAIN: {"A": ["192.0.2.1"]}},
        ses_dkim_tokens=TOKENS,
        mail_from_domain=f"mail.{DOMAIN}",
        ses_region=REGION,
    )
    checks = by_name(report)
    assert {c.name: c.status for c in report.checks} == {
        "SPF": "fail",
        "DKIM (SES)": "fail",
        "DMARC": "fail",
        "MX": "warn",
        "MAIL FROM MX": "fail",
        "MAIL FROM SPF": "fail",
    }
    assert not report.ok
    assert checks["SPF"].fix == f'{DOMAIN} TXT "v=spf1 include:amazonses.com ~all"'
    assert checks["DKIM (SES)"].fix.splitlines() == [
        f"{t}._domainkey.{DOMAIN} CNAME {t}.dkim.amazonses.com." for t in TOKENS
    ]
    assert checks["DMARC"].fix == (
        f'_dmarc.{DOMAIN} TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}"'
    )
    assert "No MX record" in checks["MX"].message
    assert (
        checks["MAIL FROM MX"].fix == f"mail.{DOMAIN} MX 10 feedback-smtp.{REGION}.amazonses.com."
    )
    assert checks["MAIL FROM SPF"].fix == f'mail.{DOMAIN} TXT "v=spf1 include:amazonses.com ~all"'


async def test_domain_that_does_not_exist_fails_without_crashing(
    dns_server: DnsTestServer,
) -> None:
    report = await run_check(dns_server, {}, domain="nowhere.test")
    assert {c.name: c.status for c in report.checks} == {
        "SPF": "fail",
        "DKIM": "fail",
        "DMARC": "fail",
        "MX": "warn",
    }
    dkim = by_name(report)["DKIM"]
    assert "mailer domain setup nowhere.test" in dkim.fix
    assert "<selector>._domainkey.nowhere.test" in dkim.fix


async def test_two_spf_records_fail_and_the_fix_merges_them(dns_server: DnsTestServer) -> None:
    zone = full_zone()
    zone[DOMAIN]["TXT"] = ["v=spf1 include:amazonses.com ~all", "v=spf1 ip4:192.0.2.1 -all"]
    spf = by_name(await run_check(dns_server, zone, ses_region=REGION))["SPF"]
    assert spf.status == "fail"
    assert "2 SPF records" in spf.message
    assert sorted(spf.found) == sorted(zone[DOMAIN]["TXT"])
    assert spf.fix == f'{DOMAIN} TXT "v=spf1 include:amazonses.com ip4:192.0.2.1 -all"'


@pytest.mark.parametrize(
    ("record", "ses", "status", "fix_value"),
    [
        ("v=spf1 include:amazonses.com -all", True, "pass", None),
        ("v=spf1 mx ~all", False, "pass", None),
        ("v=spf1 include:amazonses.com +all", True, "warn", "v=spf1 include:amazonses.com ~all"),
        ("v=spf1 include:amazonses.com ?all", True, "warn", "v=spf1 include:amazonses.com ~all"),
        ("v=spf1 include:amazonses.com", True, "warn", "v=spf1 include:amazonses.com ~all"),
        ("v=spf1 mx -all", True, "warn", "v=spf1 mx include:amazonses.com -all"),
        ("v=spf1 redirect=_spf.example.test", False, "pass", None),
    ],
)
async def test_spf_qualifiers_and_ses_include(
    dns_server: DnsTestServer, record: str, ses: bool, status: str, fix_value: str | None
) -> None:
    zone = full_zone()
    zone[DOMAIN]["TXT"] = [record, "unrelated"]
    spf = by_name(await run_check(dns_server, zone, ses_region=REGION if ses else None))["SPF"]
    assert spf.status == status, spf.message
    assert spf.fix == (f'{DOMAIN} TXT "{fix_value}"' if fix_value else None)


async def test_dmarc_p_none_warns_and_suggests_quarantine(dns_server: DnsTestServer) -> None:
    zone = full_zone()
    zone[f"_dmarc.{DOMAIN}"] = {"TXT": ["v=DMARC1; p=none"]}
    dmarc = by_name(await run_check(dns_server, zone))["DMARC"]
    assert dmarc.status == "warn"
    assert "p=quarantine" in dmarc.message
    assert "no aggregate reports" in dmarc.message
    assert dmarc.found == ["v=DMARC1; p=none"]
    assert dmarc.fix is not None
    assert "p=quarantine" in dmarc.fix


@pytest.mark.parametrize(
    ("records", "status", "text"),
    [
        (["v=DMARC1; p=reject; rua=mailto:d@example.test"], "pass", "p=reject"),
        (["v=DMARC1; p=quarantine", "v=DMARC1; p=reject"], "fail", "2 DMARC records"),
        (["v=DMARC1; rua=mailto:d@example.test"], "fail", "no p= tag"),
        (["v=DMARC1; p=maybe"], "fail", "unknown policy"),
        (["some other text"], "fail", "No DMARC record"),
    ],
)
async def test_dmarc_records(
    dns_server: DnsTestServer, records: list[str], status: str, text: str
) -> None:
    zone = full_zone()
    zone[f"_dmarc.{DOMAIN}"] = {"TXT": records}
    dmarc = by_name(await run_check(dns_server, zone))["DMARC"]
    assert dmarc.status == status
    assert text in dmarc.message


async def test_subdomain_inherits_the_parent_dmarc_policy(dns_server: DnsTestServer) -> None:
    zone = full_zone()
    zone[f"_dmarc.{DOMAIN}"] = {"TXT": ["v=DMARC1; p=reject; sp=none"]}
    zone[f"news.{DOMAIN}"] = {"TXT": ["v=spf1 include:amazonses.com ~all"]}
    report = await run_check(dns_server, zone, domain=f"news.{DOMAIN}")
    dmarc = by_name(report)["DMARC"]
    # sp= governs subdomains
    assert dmarc.status == "warn"
    assert "inherited" in dmarc.message
    assert (f"_dmarc.news.{DOMAIN}", "TXT") in dns_server.queries


@pytest.mark.parametrize(
    ("record", "status", "text"),
    [
        ("v=DKIM1; k=rsa; p=", "fail", "revoked"),
        ("v=DKIM1; p=not*base64!", "fail", "not valid base64"),
        ("v=DKIM2; p=AAAA", "fail", "must be DKIM1"),
        ("v=DKIM1; k=dsa; p=AAAA", "fail", "unknown key type"),
        (f"v=DKIM1; t=y; p={PUBLIC_KEY}", "warn", "testing mode"),
        (f"k=rsa; p={PUBLIC_KEY}", "pass", "DKIM key published"),
    ],
)
async def test_dkim_selector_records(
    dns_server: DnsTestServer, record: str, status: str, text: str
) -> None:
    zone = full_zone()
    zone[f"s1._domainkey.{DOMAIN}"] = {"TXT": [record]}
    dkim = by_name(await run_check(dns_server, zone, dkim_selectors=["S1"]))["DKIM (s1)"]
    assert dkim.status == status
    assert text in dkim.message
    if status == "fail":
        assert dkim.fix == f's1._domainkey.{DOMAIN} TXT "v=DKIM1; k=rsa; p=<base64 public key>"'


async def test_missing_and_duplicate_dkim_keys_fail(dns_server: DnsTestServer) -> None:
    zone = full_zone()
    zone[f"s2._domainkey.{DOMAIN}"] = {"TXT": [f"v=DKIM1; p={PUBLIC_KEY}", "v=DKIM1; p=AAAA"]}
    checks = by_name(await run_check(dns_server, zone, dkim_selectors=["s2", "s3"]))
    assert checks["DKIM (s2)"].status == "fail"
    assert "2 DKIM records" in checks["DKIM (s2)"].message
    assert checks["DKIM (s3)"].status == "fail"
    assert f"No DKIM key at s3._domainkey.{DOMAIN}" in checks["DKIM (s3)"].message


async def test_one_wrong_ses_cname_is_named(dns_server: DnsTestServer) -> None:
    zone = full_zone()
    zone[f"{TOKENS[1]}._domainkey.{DOMAIN}"] = {"CNAME": ["somewhere.else.test."]}
    dkim = by_name(await run_check(dns_server, zone, ses_dkim_tokens=TOKENS))["DKIM (SES)"]
    assert dkim.status == "fail"
    assert "1 of 3" in dkim.message
    assert dkim.fix == f"{TOKENS[1]}._domainkey.{DOMAIN} CNAME {TOKENS[1]}.dkim.amazonses.com."
    assert f"{TOKENS[1]}._domainkey.{DOMAIN} CNAME somewhere.else.test." in dkim.found


async def test_without_known_selector_common_ones_are_probed(dns_server: DnsTestServer) -> None:
    zone = full_zone()
    zone[f"default._domainkey.{DOMAIN}"] = {"TXT": [f"v=DKIM1; p={PUBLIC_KEY}"]}
    dkim = by_name(await run_check(dns_server, zone))["DKIM"]
    assert dkim.status == "warn"
    assert "selector(s) default" in dkim.message
    assert (f"selector1._domainkey.{DOMAIN}", "TXT") in dns_server.queries


async def test_null_mx_warns(dns_server: DnsTestServer) -> None:
    zone = full_zone()
    zone[DOMAIN]["MX"] = ["0 ."]
    mx = by_name(await run_check(dns_server, zone))["MX"]
    assert mx.status == "warn"
    assert "Null MX" in mx.message


async def test_mail_from_mx_pointing_elsewhere_fails(dns_server: DnsTestServer) -> None:
    zone = full_zone()
    zone[f"mail.{DOMAIN}"]["MX"] = ["10 feedback-smtp.eu-west-1.amazonses.com."]
    report = await run_check(dns_server, zone, mail_from_domain=f"mail.{DOMAIN}", ses_region=REGION)
    assert by_name(report)["MAIL FROM MX"].status == "fail"


async def test_unanswered_queries_time_out_as_failures(silent_dns: SilentUdp) -> None:
    resolver = make_resolver([silent_dns.address], timeout=0.3)
    report = await check_domain(
        DOMAIN,
        ses_dkim_tokens=TOKENS,
        mail_from_domain=f"mail.{DOMAIN}",
        ses_region=REGION,
        resolver=resolver,
    )
    assert [c.status for c in report.checks] == ["fail"] * 6
    assert all("timed out" in c.message for c in report.checks)
    assert by_name(report)["SPF"].message == (
        f"Could not read the SPF record of {DOMAIN}: DNS lookup of TXT {DOMAIN} timed out."
    )


async def test_nameserver_where_nothing_listens_fails_every_check() -> None:
    resolver = make_resolver([f"127.0.0.1:{closed_port()}"], timeout=0.3)
    report = await check_domain(DOMAIN, dkim_selectors=["s1"], resolver=resolver)
    assert [c.status for c in report.checks] == ["fail"] * 4
    assert not report.ok


def test_normalize_domain() -> None:
    assert normalize_domain(" Example.COM. ") == "example.com"
    assert normalize_domain("bücher.example") == "xn--bcher-kva.example"
    assert normalize_domain("xn--bcher-kva.example") == "xn--bcher-kva.example"
    assert normalize_domain("a-b.c-d.example") == "a-b.c-d.example"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "localhost",
        "a..example",
        "-a.example",
        "a-.example",
        "under_score.example",
        "exa mple.com",
        "example.com\n",
        "1.2.3.4",
        "x" * 64 + ".example",
        ("a" * 60 + ".") * 5 + "example",
        "example.com:25",
        "*.example.com",
    ],
)
def test_normalize_domain_rejects(bad: str) -> None:
    with pytest.raises(InvalidName):
        normalize_domain(bad)


def test_selectors() -> None:
    assert normalize_selector("Sel_1.2024") == "sel_1.2024"
    for bad in ["", "a b", "a..b", "x" * 64, "sel;drop"]:
        with pytest.raises(InvalidName):
            normalize_selector(bad)


def test_parse_nameserver() -> None:
    assert parse_nameserver("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("::1") == ("::1", 53)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    for bad in ["dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1", "1.2.3.4:70000"]:
        with pytest.raises(ValueError, match="nameserver"):
            parse_nameserver(bad)
