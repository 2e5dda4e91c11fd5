"""/api/v1/webhook-endpoints over HTTP: CRUD, refusals, the test event, the delivery log."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from mailer.config import Settings
from mailer.db import session_scope
from mailer.models import WebhookDelivery, WebhookEndpoint
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.errors import assert_error
from tests.fixtures.webhook_receiver import Receiver

BASE = "/api/v1/webhook-endpoints"


async def _count(c: ApiClient, model: Any) -> int:
    async with session_scope(c.state.sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_create_read_update_delete(hook_settings: Settings, receiver: Receiver) -> None:
    async with api_client(hook_settings) as c:
        h = auth(await c.make_key(admin=True))
        created = await c.http.post(
            BASE,
            json={
                "url": receiver.url,
                "events": ["email.bounced", "email.sent"],
                "description": "app",
            },
            headers=h,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["secret"].startswith("whsec_")
        assert body["events"] == ["email.bounced", "email.sent"]
        assert body["enabled"] is True and body["disabledReason"] is None
        eid = body["id"]

        one = (await c.http.get(f"{BASE}/{eid}", headers=h)).json()
        assert "secret" not in one and one["url"] == receiver.url
        listed = (await c.http.get(BASE, headers=h)).json()
        assert listed["total"] == 1 and "secret" not in listed["data"][0]

        patched = await c.http.patch(
            f"{BASE}/{eid}", json={"events": [], "enabled": False}, headers=h
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["events"] == [] and patched.json()["enabled"] is False
        assert patched.json()["disabledReason"] == "disabled by an admin"
        enabled = (await c.http.patch(f"{BASE}/{eid}", json={"enabled": True}, headers=h)).json()
        assert enabled["enabled"] is True and enabled["disabledReason"] is None

        rotated = await c.http.post(f"{BASE}/{eid}/rotate-secret", headers=h)
        assert rotated.status_code == 200
        assert rotated.json()["secret"] != body["secret"]
        assert rotated.json()["previousSecretExpiresAt"] is not None

        gone = await c.http.delete(f"{BASE}/{eid}", headers=h)
        assert gone.status_code == 204
        assert_error(await c.http.get(f"{BASE}/{eid}", headers=h), 404, "not_found")
        assert_error(await c.http.delete(f"{BASE}/{eid}", headers=h), 404, "not_found")


async def test_bad_input_is_refused_and_nothing_stored(hook_settings: Settings) -> None:
    async with api_client(hook_settings) as c:
        h = auth(await c.make_key(admin=True))
        send = auth(await c.make_key())
        cases = [
            ({"url": "ftp://example.com/x"}, "url"),
            ({"url": "not a url"}, "url"),
            ({"url": "http://user:pw@127.0.0.1/x"}, "url"),
            ({"url": "http://127.0.0.1/x", "events": ["email.sent", "email.nope"]}, "events[1]"),
        ]
        for payload, field in cases:
            error = assert_error(await c.http.post(BASE, json=payload, headers=h), 422)
            assert any(d.get("field") == field for d in error["details"]), error
        assert_error(await c.http.post(BASE, json={}, headers=h), 422)
        assert_error(await c.http.post(BASE, json={"url": "http://127.0.0.1/"}, headers=send), 403)
        assert await _count(c, WebhookEndpoint) == 0
        made = (await c.http.post(BASE, json={"url": "http://127.0.0.1/x"}, headers=h)).json()
        bad_patch = await c.http.patch(
            f"{BASE}/{made['id']}", json={"url": "gopher://x"}, headers=h
        )
        assert_error(bad_patch, 422)
        assert (
            (await c.http.get(f"{BASE}/{made['id']}", headers=h))
            .json()["url"]
            .startswith("http://127.0.0.1")
        )
        bad_cursor = await c.http.get(
            f"{BASE}/{made['id']}/deliveries", params={"cursor": "abc"}, headers=h
        )
        assert_error(bad_cursor, 422)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::1]/hook",
        "http://224.0.0.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_ssrf_targets_refused_at_save(settings_factory: Any, url: str) -> None:
    async with api_client(settings_factory()) as c:  # WEBHOOK_ALLOW_PRIVATE off
        h = auth(await c.make_key(admin=True))
        error = assert_error(await c.http.post(BASE, json={"url": url}, headers=h), 422)
        assert error["details"][0]["field"] == "url"
        assert await _count(c, WebhookEndpoint) == 0


async def test_https_required_in_production(settings_factory: Any) -> None:
    settings = settings_factory(app_env="production", public_url="https://mail.example.com")
    async with api_client(settings) as c:
        h = auth(await c.make_key(admin=True))
        error = assert_error(
            await c.http.post(BASE, json={"url": "http://93.184.216.34/hook"}, headers=h), 422
        )
        assert "https" in error["details"][0]["message"]
        ok = await c.http.post(BASE, json={"url": "https://93.184.216.34/hook"}, headers=h)
        assert ok.status_code == 201, ok.text


async def test_test_event_signed_and_logged(hook_settings: Settings, receiver: Receiver) -> None:
    async with api_client(hook_settings) as c:
        h = auth(await c.make_key(admin=True))
        made = (await c.http.post(BASE, json={"url": receiver.url}, headers=h)).json()
        result = await c.http.post(f"{BASE}/{made['id']}/test", headers=h)
        assert result.status_code == 200, result.text
        out = result.json()
        assert out["success"] is True and out["statusCode"] == 200 and out["latencyMs"] >= 0
        assert len(receiver.requests) == 1
        received = receiver.requests[0]
        payload = received.verify(made["secret"])
        assert payload["type"] == "webhook.test"
        assert payload["data"]["endpointId"] == made["id"]
        assert received.id == out["eventId"]

        receiver.answer = lambda _: (503, {}, b"x" * 5000)
        failed = (await c.http.post(f"{BASE}/{made['id']}/test", headers=h)).json()
        assert failed["success"] is False and failed["statusCode"] == 503
        assert failed["response"] == "x" * 1024  # at most 1 KB read

        log = (await c.http.get(f"{BASE}/{made['id']}/deliveries", headers=h)).json()
        assert [d["state"] for d in log["data"]] == ["FAILED", "DELIVERED"]  # newest first
        assert log["data"][1]["eventId"] == out["eventId"]
        assert log["nextCursor"] is None

        await receiver.stop()  # connection refused
        down = (await c.http.post(f"{BASE}/{made['id']}/test", headers=h)).json()
        assert down["success"] is False and down["statusCode"] is None and down["error"]


async def test_deliveries_cursor_pagination(hook_settings: Settings, receiver: Receiver) -> None:
    async with api_client(hook_settings) as c:
        h = auth(await c.make_key(admin=True))
        made = (await c.http.post(BASE, json={"url": receiver.url}, headers=h)).json()
        ids = [
            (await c.http.post(f"{BASE}/{made['id']}/test", headers=h)).json()["eventId"]
            for _ in range(5)
        ]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (
                await c.http.get(f"{BASE}/{made['id']}/deliveries", params=params, headers=h)
            ).json()
            pages += 1
            seen.extend(d["eventId"] for d in page["data"])
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids)) and pages == 3
        assert await _count(c, WebhookDelivery) == 5
