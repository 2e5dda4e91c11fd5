"""GET /api/v1/admin/domains/{domain}/check on the real app (real auth and database), with
the domains router included the way create_app will include it, and the resolver
dependency pointed at the test DNS server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from mailer.app import API_PREFIX, create_app
from mailer.auth import service as keys
from mailer.config import Settings
from mailer.db import session_scope
from mailer.domains.dns_check import make_resolver
from mailer.domains.endpoints import get_resolver, router
from tests.fixtures.dns_server import DnsTestServer, dns_server
from tests.fixtures.dns_zones import DOMAIN, full_zone

__all__ = ["dns_server"]  # fixture

URL = f"{API_PREFIX}/admin/domains/{{}}/check"


class Api:
    def __init__(self, http: httpx.AsyncClient, admin: str, sender: str) -> None:
        self.http = http
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.sender = {"Authorization": f"Bearer {sender}"}

    async def check(self, domain: str, **params: Any) -> httpx.Response:
        return await self.http.get(URL.format(domain), params=params, headers=self.admin)


@pytest.fixture
async def api(settings: Settings, dns_server: DnsTestServer) -> AsyncIterator[Api]:
    app = create_app(settings)
    if not any(getattr(r, "path", "") == URL.format("{domain}") for r in app.routes):
        app.include_router(router, prefix=API_PREFIX)  # until create_app includes it
    app.dependency_overrides[get_resolver] = lambda: make_resolver([dns_server.address], timeout=3)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=60) as manager:
        async with session_scope(app.state.mailer.sessionmaker) as session:
            admin = (await keys.create_key(session, "admin", admin=True)).secret
            sender = (await keys.create_key(session, "sender")).secret
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Api(http, admin, sender)


async def test_report_of_a_configured_domain(api: Api, dns_server: DnsTestServer) -> None:
    dns_server.zone = full_zone()
    response = await api.check(DOMAIN.upper(), selector="s1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["domain"] == DOMAIN
    assert body["status"] == "pass"
    assert body["ok"] is True
    assert [(c["name"], c["status"]) for c in body["checks"]] == [
        ("SPF", "pass"),
        ("DKIM (s1)", "pass"),
        ("DMARC", "pass"),
        ("MX", "pass"),
    ]
    assert set(body["checks"][0]) == {"name", "status", "found", "message", "fix"}
    assert body["notes"] == []


async def test_report_of_a_bare_domain_lists_fixes(api: Api, dns_server: DnsTestServer) -> None:
    dns_server.zone = {}
    response = await api.check("bare.test")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False
    assert body["status"] == "fail"
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["SPF"]["fix"] == 'bare.test TXT "v=spf1 mx ~all"'
    assert checks["DMARC"]["fix"] == (
        '_dmarc.bare.test TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@bare.test"'
    )
    assert checks["DKIM"]["status"] == "fail"


async def test_idna_domain_is_encoded(api: Api, dns_server: DnsTestServer) -> None:
    dns_server.zone = full_zone("xn--bcher-kva.test")
    response = await api.check("bücher.test")
    assert response.status_code == 200
    assert response.json()["domain"] == "xn--bcher-kva.test"
    assert response.json()["checks"][0]["status"] == "pass"


@pytest.mark.parametrize(
    ("domain", "params", "field"),
    [
        ("exa_mple.test", {}, "path:domain"),
        ("localhost", {}, "path:domain"),
        ("a..test", {}, "path:domain"),
        ("x" * 64 + ".test", {}, "path:domain"),
        (DOMAIN, {"selector": "bad selector"}, "query:selector"),
        (DOMAIN, {"selector": "x" * 201}, "query:selector"),
    ],
)
async def test_bad_input_is_422(
    api: Api, dns_server: DnsTestServer, domain: str, params: dict[str, str], field: str
) -> None:
    response = await api.check(domain, **params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == field
    assert dns_server.queries == []


async def test_needs_an_admin_key(api: Api) -> None:
    response = await api.http.get(URL.format(DOMAIN))
    assert response.status_code == 401
    response = await api.http.get(URL.format(DOMAIN), headers=api.sender)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"
