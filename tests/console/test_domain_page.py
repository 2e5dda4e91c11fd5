"""The console's sending-domain page through the real app in process, its resolver pointed
at the tests' DNS server: a configured domain passes, a bare one shows what to publish, and
a hostile domain parameter comes back as a message, escaped."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Mount

from mailer.console.pages.domain import resolver_factory
from mailer.domains.dns_check import make_resolver
from tests.fixtures.client import api_client
from tests.fixtures.console import sign_in
from tests.fixtures.dns_server import DnsTestServer, dns_server
from tests.fixtures.dns_zones import DOMAIN, full_zone

__all__ = ["dns_server"]  # fixture


def _console(app: FastAPI) -> FastAPI:
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/console")
    console = mount.app
    assert isinstance(console, FastAPI)
    return console


@pytest.fixture
async def console(settings_factory: Any, dns_server: DnsTestServer) -> AsyncIterator[Any]:
    async with api_client(settings_factory(mail_from=f"News <news@{DOMAIN}>")) as client:
        _console(client.app).dependency_overrides[resolver_factory] = lambda: (
            lambda: make_resolver([dns_server.address], timeout=3)
        )
        await sign_in(client, await client.make_key("admin", admin=True))
        yield client


def _rows(html: str) -> dict[str, str]:
    """Check name → its row's text."""
    rows = re.findall(r'<th scope="row">([^<]+)</th>(.*?)</tr>', html, re.S)
    return {name: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", rest)).strip() for name, rest in rows}


async def test_the_configured_domain_passes(console: Any, dns_server: DnsTestServer) -> None:
    dns_server.zone = full_zone()
    page = await console.http.get("/console/domain")  # the domain of MAIL_FROM
    assert page.status_code == 200, page.text
    assert f"<strong>{DOMAIN}</strong>" in page.text
    rows = _rows(page.text)
    assert all(rows[name].startswith("pass") for name in ("SPF", "DMARC", "MX")), rows
    assert rows["DKIM"].startswith("warn")  # no selector given, and the transport is not SES


async def test_a_bare_domain_shows_what_to_publish(console: Any, dns_server: DnsTestServer) -> None:
    dns_server.zone = {}
    page = await console.http.get("/console/domain", params={"domain": "bare.test"})
    assert page.status_code == 200, page.text
    rows = _rows(page.text)
    assert any(text.startswith("fail") for text in rows.values()), rows
    assert "v=spf1" in page.text and "v=DMARC1" in page.text  # the records to publish


async def test_a_hostile_domain_is_refused_escaped(console: Any) -> None:
    page = await console.http.get("/console/domain", params={"domain": "<script>x</script>.test"})
    assert page.status_code == 200, page.text
    assert "<script>x" not in page.text
    assert 'role="alert"' in page.text and "&lt;script&gt;" in page.text
