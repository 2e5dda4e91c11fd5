"""`mailer domain check`: a domain that does not exist is reported as not resolving (not as
a missing SPF record); DNS that does not answer has its own exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailer.cli.domain import EXIT_CHECK_FAILED, EXIT_DNS_UNAVAILABLE, app
from mailer.config import get_settings
from tests.domains.test_dns_check import DOMAIN, full_zone
from tests.fixtures.dns_server import DnsTestServer, SilentUdp, dns_server, silent_dns

__all__ = ["dns_server", "silent_dns"]  # fixtures

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MAIL_TRANSPORT", "outbox")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for name in ("DKIM_SELECTOR", "DKIM_DOMAIN", "DKIM_PRIVATE_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_domain_that_does_not_exist_does_not_resolve(dns_server: DnsTestServer) -> None:
    dns_server.zone = full_zone()  # knows DOMAIN only
    result = runner.invoke(
        app, ["check", "no-such.example.test", "--nameserver", dns_server.address]
    )
    assert result.exit_code == EXIT_CHECK_FAILED == 1, result.output
    assert "no-such.example.test does not resolve: DNS has no such domain" in result.output
    assert "SPF" not in result.output

    as_json = runner.invoke(
        app, ["check", "no-such.example.test", "--nameserver", dns_server.address, "--json"]
    )
    assert as_json.exit_code == 1
    report = json.loads(as_json.output)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"]] == ["DNS"]
    assert "does not resolve" in report["checks"][0]["message"]


def test_an_existing_domain_is_checked_as_before(dns_server: DnsTestServer) -> None:
    dns_server.zone = {DOMAIN: {"A": ["192.0.2.1"]}}
    result = runner.invoke(app, ["check", DOMAIN, "--nameserver", dns_server.address])
    assert result.exit_code == 1
    assert "FAIL  SPF" in result.output
    assert "does not resolve" not in result.output


def test_dns_that_does_not_answer_is_exit_3(silent_dns: SilentUdp) -> None:
    result = runner.invoke(
        app, ["check", DOMAIN, "--nameserver", silent_dns.address, "--timeout", "0.3"]
    )
    assert result.exit_code == EXIT_DNS_UNAVAILABLE == 3, result.output
    assert "timed out" in result.output
    assert "does not resolve" not in result.output
    # not reported as a failure of the domain either
    assert "FAIL" not in result.output, result.output
    assert result.output.splitlines()[-1].endswith(" 0 failed, 1 unknown (DNS did not answer)."), (
        result.output
    )


def test_help_documents_the_exit_codes() -> None:
    text = runner.invoke(app, ["check", "--help"]).output
    for line in ("0  every check passed", "1  a check failed", "2  bad input", "3  DNS did not"):
        assert line in text
