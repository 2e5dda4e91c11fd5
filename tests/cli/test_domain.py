"""`mailer domain setup|check` through Typer's CliRunner on the sub-app, with settings from
the environment as the real command reads them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer.cli.domain import app
from mailer.config import get_settings
from tests.fixtures.dns_server import DnsTestServer, closed_port, dns_server
from tests.fixtures.dns_zones import DOMAIN, full_zone
from tests.fixtures.ses_identity_server import SES_ENV, SesIdentityServer, zone_from_records

__all__ = ["dns_server"]  # fixture

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A clean configuration: no .env (cwd is tmp_path), outbox transport."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/unused.db")
    monkeypatch.setenv("MAIL_TRANSPORT", "outbox")
    for name in ("DKIM_SELECTOR", "DKIM_DOMAIN", "DKIM_PRIVATE_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture
def identity_server() -> Iterator[SesIdentityServer]:
    with SesIdentityServer() as server:
        yield server


def use_ses(env: pytest.MonkeyPatch, endpoint: str) -> None:
    for name, value in SES_ENV.items():
        env.setenv(name, value)
    env.setenv("AWS_ENDPOINT_URL", endpoint)
    get_settings.cache_clear()


def test_check_of_a_configured_domain_exits_0(
    env: pytest.MonkeyPatch, dns_server: DnsTestServer
) -> None:
    dns_server.zone = full_zone()
    result = runner.invoke(
        app, ["check", DOMAIN, "--selector", "s1", "--nameserver", dns_server.address]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Domain {DOMAIN}"
    assert any(line.startswith("PASS  DKIM (s1)") for line in lines)
    assert any(line.startswith("PASS  DMARC") for line in lines)
    assert lines[-1] == "4 passed, 0 warning(s), 0 failed."
    assert "fix:" not in result.output


def test_check_of_a_bare_domain_prints_fixes_and_exits_1(
    env: pytest.MonkeyPatch, dns_server: DnsTestServer
) -> None:
    dns_server.zone = {DOMAIN: {"A": ["192.0.2.1"]}}
    result = runner.invoke(app, ["check", DOMAIN, "--nameserver", dns_server.address])
    assert result.exit_code == 1, result.output
    assert "FAIL  SPF" in result.output
    assert "FAIL  DMARC" in result.output
    assert "WARN  MX" in result.output
    assert f'fix:   {DOMAIN} TXT "v=spf1 mx ~all"' in result.output
    assert f'fix:   _dmarc.{DOMAIN} TXT "v=DMARC1; p=quarantine' in result.output
    assert result.output.splitlines()[-1] == "0 passed, 1 warning(s), 3 failed."


def test_check_json_output(env: pytest.MonkeyPatch, dns_server: DnsTestServer) -> None:
    zone = full_zone()
    zone[f"_dmarc.{DOMAIN}"] = {"TXT": ["v=DMARC1; p=none"]}
    dns_server.zone = zone
    result = runner.invoke(
        app, ["check", DOMAIN, "-s", "s1", "--nameserver", dns_server.address, "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["status"] == "warn"
    assert report["ok"] is True
    dmarc = next(c for c in report["checks"] if c["name"] == "DMARC")
    assert dmarc["status"] == "warn"
    assert dmarc["fix"].startswith(f'_dmarc.{DOMAIN} TXT "v=DMARC1; p=quarantine')


def test_check_timeout_is_exit_3_not_a_crash(env: pytest.MonkeyPatch) -> None:
    """DNS not answering says nothing about the domain: exit 3, not a check failure (1)."""
    result = runner.invoke(
        app, ["check", DOMAIN, "--nameserver", f"127.0.0.1:{closed_port()}", "--timeout", "0.3"]
    )
    assert result.exit_code == 3, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "timed out" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["check", "not_a domain"],
        ["check", DOMAIN, "--selector", "bad selector"],
        ["check", DOMAIN, "--nameserver", "dns.example"],
    ],
)
def test_check_rejects_bad_input_with_exit_2(env: pytest.MonkeyPatch, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_check_uses_the_ses_identity_tokens(
    env: pytest.MonkeyPatch, dns_server: DnsTestServer, identity_server: SesIdentityServer
) -> None:
    use_ses(env, identity_server.url)
    setup = runner.invoke(app, ["setup", DOMAIN])
    assert setup.exit_code == 0, setup.output
    tokens = identity_server.identities[DOMAIN].tokens
    # The domain exists but nothing is published yet: the SES CNAMEs are named in the fix.
    dns_server.zone = {DOMAIN: {"A": ["192.0.2.1"]}}
    result = runner.invoke(app, ["check", DOMAIN, "--nameserver", dns_server.address])
    assert result.exit_code == 1
    assert "FAIL  DKIM (SES)" in result.output
    for token in tokens:
        assert f"{token}._domainkey.{DOMAIN} CNAME {token}.dkim.amazonses.com." in result.output
    assert f"note: SES identity {DOMAIN}: not verified yet" in result.output


def test_setup_prints_zone_lines_and_the_next_step(
    env: pytest.MonkeyPatch, identity_server: SesIdentityServer, dns_server: DnsTestServer
) -> None:
    use_ses(env, identity_server.url)
    result = runner.invoke(app, ["setup", DOMAIN, "--mail-from", "bounces"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"SES identity {DOMAIN}: created." in out
    tokens = identity_server.identities[DOMAIN].tokens
    zone_lines = [line.split() for line in out.splitlines() if " IN " in line]
    assert [(parts[0], parts[3], " ".join(parts[4:])) for parts in zone_lines] == [
        *[(f"{t}._domainkey.{DOMAIN}.", "CNAME", f"{t}.dkim.amazonses.com.") for t in tokens],
        (f"{DOMAIN}.", "TXT", '"v=spf1 include:amazonses.com ~all"'),
        (f"_dmarc.{DOMAIN}.", "TXT", f'"v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}"'),
        (f"bounces.{DOMAIN}.", "MX", "10 feedback-smtp.us-east-1.amazonses.com."),
        (f"bounces.{DOMAIN}.", "TXT", '"v=spf1 include:amazonses.com ~all"'),
    ]
    assert f"Next: publish the records, then run `mailer domain check {DOMAIN}`" in out
    again = runner.invoke(app, ["setup", DOMAIN, "--mail-from", "bounces"])
    assert f"SES identity {DOMAIN}: already existed." in again.output
    # Publishing what setup printed makes the check pass.
    from mailer.domains.ses_identity import dns_records

    dns_server.zone = zone_from_records(
        dns_records(
            DOMAIN, dkim_tokens=tokens, mail_from_domain=f"bounces.{DOMAIN}", region="us-east-1"
        )
    )
    check = runner.invoke(app, ["check", DOMAIN, "--nameserver", dns_server.address])
    assert check.exit_code == 0, check.output
    assert "PASS  MAIL FROM MX" in check.output


def test_setup_with_ses_unreachable_exits_1(env: pytest.MonkeyPatch) -> None:
    use_ses(env, f"http://127.0.0.1:{closed_port()}")
    result = runner.invoke(app, ["setup", DOMAIN, "--no-mail-from"])
    assert result.exit_code == 1
    assert "SES setup failed" in result.output
