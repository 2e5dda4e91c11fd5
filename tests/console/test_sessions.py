"""Console sessions and headers through the real app in process (no browser): expiry,
revocation, cookie flags, security headers, CSRF on JSON-style requests, the SES quota."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from mailer.auth import service as keys
from mailer.console import sessions
from mailer.db import session_scope
from mailer.models import ConsoleSession
from mailer.models.base import utcnow
from tests.fixtures.client import api_client
from tests.fixtures.console import sign_in as _sign_in
from tests.fixtures.ses_server import SES_ACCESS_KEY, SES_SECRET_KEY, SesTestServer


async def _age_sessions(client: Any, **changes: Any) -> None:
    async with session_scope(client.state.sessionmaker) as session:
        await session.execute(update(ConsoleSession).values(**changes))


async def test_headers_and_cookie_flags(client: Any, admin_key: str) -> None:
    login = await client.http.get("/console/login")
    csp = login.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    assert login.headers["x-content-type-options"] == "nosniff"
    assert login.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in login.text  # only <script src=...>
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert token is not None
    answer = await client.http.post(
        "/console/login", data={"key": admin_key, "csrf_token": token.group(1)}
    )
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(sessions.COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # PUBLIC_URL is http in the tests
    async with session_scope(client.state.sessionmaker) as session:
        stored = (await session.scalars(select(ConsoleSession))).one()
    value = cookie.split(";")[0].split("=", 1)[1]
    assert stored.id != value and len(stored.id) == 64  # only a hash of the token is stored


async def test_secure_cookie_when_public_url_is_https(client_factory: Any) -> None:
    async with client_factory(public_url="https://mail.example.com") as client:
        key = await client.make_key("admin", admin=True)
        login = await client.http.get("/console/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token is not None
        assert "Secure" in login.headers["set-cookie"]
        # httpx keeps Secure cookies off plain http, as a browser would: send it by hand.
        client.http.cookies.clear()
        answer = await client.http.post(
            "/console/login",
            data={"key": key, "csrf_token": token.group(1)},
            headers={"Cookie": f"mailer_console_login={token.group(1)}"},
        )
        assert answer.status_code == 303
        assert "Secure" in answer.headers["set-cookie"]


@pytest.mark.parametrize(
    "changes",
    [
        {"last_seen_at": utcnow() - sessions.IDLE - timedelta(seconds=1)},
        {"expires_at": utcnow() - timedelta(seconds=1)},
    ],
    ids=["idle", "absolute"],
)
async def test_expired_session_signs_out(client: Any, admin_key: str, changes: Any) -> None:
    await _sign_in(client, admin_key)
    await _age_sessions(client, **changes)
    page = await client.http.get("/console/batches")
    assert page.status_code == 303 and "/console/login" in page.headers["location"]
    live = await client.http.get("/console/batches/x/live.json")
    assert live.status_code == 401
    async with session_scope(client.state.sessionmaker) as session:
        assert (await session.scalars(select(ConsoleSession))).first() is None


async def test_revoked_key_ends_session_on_next_request(client: Any, admin_key: str) -> None:
    await _sign_in(client, admin_key)
    async with session_scope(client.state.sessionmaker) as session:
        key_id = (await session.scalars(select(ConsoleSession.api_key_id))).one()
        await keys.revoke_key(session, key_id)
    page = await client.http.get("/console/")
    assert page.status_code == 303


async def test_state_change_needs_csrf_token(client: Any, admin_key: str) -> None:
    csrf = await _sign_in(client, admin_key)
    refused = await client.http.post("/console/sending/pause")
    assert refused.status_code == 403
    refused = await client.http.post("/console/sending/pause", headers={"X-CSRF-Token": "x"})
    assert refused.status_code == 403
    accepted = await client.http.post("/console/sending/pause", headers={"X-CSRF-Token": csrf})
    assert accepted.status_code == 303
    overview = await client.http.get("/console/")
    assert 'id="sending-state">Paused' in overview.text


async def test_root_redirects_to_console(client: Any) -> None:
    answer = await client.http.get("/")
    assert answer.status_code == 307 and answer.headers["location"] == "/console/"


async def test_overview_shows_ses_quota(settings_factory: Any, ses_server: SesTestServer) -> None:
    settings = settings_factory(
        mail_transport="ses",
        aws_endpoint_url=ses_server.url,
        aws_region="us-east-1",
        aws_access_key_id=SES_ACCESS_KEY,
        aws_secret_access_key=SES_SECRET_KEY,
    )
    async with api_client(settings) as client:
        key = await client.make_key("admin", admin=True)
        await _sign_in(client, key)
        overview = await client.http.get("/console/")
    quota = re.search(r'<dl class="details" id="ses-quota">(.*?)</dl>', overview.text, re.S)
    assert quota is not None, overview.text
    assert "of 50,000.00" in quota.group(1) and "14.00/s" in quota.group(1)
    assert ses_server.account_requests >= 1
