"""The console's webhook pages through the real app in process (no browser), against a real
receiver on 127.0.0.1: sign-in and CSRF on every console route, create with the secret shown
once, validation and SSRF refusals as form errors, hostile values escaped, the test event,
the delivery log's pages, replays, enable/disable, rotation and deletion."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI, routing
from playwright.async_api import expect
from sqlalchemy import func, select
from starlette.routing import Mount

from mailer.db import session_scope
from mailer.models import WebhookDelivery, WebhookEndpoint
from mailer.models.base import utcnow
from mailer.models.webhook_endpoint import DeliveryState
from mailer.webhook_endpoints import repository
from tests.console.conftest import Server, make_key, screenshot
from tests.console.conftest import sign_in as browser_sign_in
from tests.fixtures.client import api_client
from tests.fixtures.console import sign_in
from tests.fixtures.webhook_receiver import Receiver

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
FAKE_ID = "01J0000000000000000000FAKE"


@pytest.fixture
async def console(settings_factory: Any) -> AsyncIterator[Any]:
    """Signed in; private addresses allowed (the receiver is on 127.0.0.1)."""
    async with api_client(settings_factory(webhook_allow_private=True)) as client:
        client.csrf = await sign_in(client, await client.make_key("admin", admin=True))
        yield client


def _fill(parameter: re.Match[str]) -> str:
    return "1" if parameter[0] == "{delivery_id}" else FAKE_ID


def _console_routes(app: FastAPI) -> list[tuple[str, str]]:
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/console")
    console = mount.app
    assert isinstance(console, FastAPI)
    found = []
    contexts: Any = routing.iter_route_contexts(console.routes)
    for route in contexts:
        methods = route.methods
        if not route.path or not methods or route.path.startswith("/login"):
            continue
        path = "/console" + re.sub(r"\{[^}]+\}", _fill, route.path)
        found.extend((method, path) for method in sorted(methods - {"HEAD"}))
    return found


async def _endpoints(client: Any) -> list[WebhookEndpoint]:
    async with session_scope(client.state.sessionmaker) as session:
        return list(await session.scalars(select(WebhookEndpoint)))


async def _create(client: Any, **form: Any) -> Any:
    data = {"csrf_token": client.csrf, "enabled": "on", **form}
    return await client.http.post("/console/webhooks", data=data)


async def test_every_console_route_needs_sign_in_and_csrf(client: Any, admin_key: str) -> None:
    routes = _console_routes(client.app)
    assert ("GET", "/console/webhooks") in routes and ("POST", "/console/webhooks") in routes
    for method, path in routes:  # signed out: to the sign-in page, nothing done
        answer = await client.http.request(method, path)
        assert answer.status_code in (303, 401), (method, path, answer.status_code)
        if answer.status_code == 303:
            assert "/console/login" in answer.headers["location"], (method, path)
    await sign_in(client, admin_key)
    for method, path in routes:  # signed in, a state change without the token: refused
        if method == "GET":
            continue
        answer = await client.http.request(method, path, data={"csrf_token": "forged"})
        assert answer.status_code == 403, (method, path, answer.status_code)
        assert "security token" in answer.text


async def test_create_without_csrf_token_is_refused(console: Any, receiver: Receiver) -> None:
    answer = await console.http.post("/console/webhooks", data={"url": receiver.url})
    assert answer.status_code == 403
    assert await _endpoints(console) == []


async def test_create_shows_the_secret_once(console: Any, receiver: Receiver) -> None:
    answer = await _create(
        console, url=receiver.url, events=["email.sent", "email.bounced"], description="CRM"
    )
    assert answer.status_code == 201, answer.text
    secret = re.search(r'id="endpoint-secret">(whsec_[A-Za-z0-9+/=]+)<', answer.text)
    assert secret is not None
    (endpoint,) = await _endpoints(console)
    assert endpoint.secret == secret.group(1)
    assert endpoint.events == ["email.sent", "email.bounced"] and endpoint.enabled
    listing = await console.http.get("/console/webhooks")
    assert listing.status_code == 200
    assert html.escape(receiver.url) in listing.text and "CRM" in listing.text
    page = await console.http.get(f"/console/webhooks/{endpoint.id}")
    for shown in (listing, page):
        assert secret.group(1) not in shown.text


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"url": "http://127.0.0.1:9/hook"}, "url", "loopback"),
        ({"url": "http://169.254.169.254/latest"}, "url", "metadata"),
        ({"url": "ftp://example.com/x"}, "url", ""),
        ({"url": "https://93.184.216.34/x", "events": ["email.nope"]}, "events", "email.nope"),
        ({"url": "https://93.184.216.34/x", "description": "x" * 501}, "description", "500"),
        ({"url": ""}, "url", ""),
    ],
    ids=["loopback", "metadata", "scheme", "event", "description", "empty"],
)
async def test_refusals_are_form_errors(
    settings_factory: Any, form: dict[str, Any], field: str, message: str
) -> None:
    async with api_client(settings_factory()) as client:  # the SSRF guard on
        client.csrf = await sign_in(client, await client.make_key("admin", admin=True))
        answer = await _create(client, **form)
        assert answer.status_code == 422, answer.text
        errors = re.search(
            r'<div class="error" role="alert" id="form-errors">(.*?)</div>', answer.text, re.S
        )
        assert errors is not None, answer.text
        assert f"<strong>{field}</strong>" in errors.group(1)
        assert message in errors.group(1)
        assert await _endpoints(client) == []
        # What was typed is kept in the form.
        if form["url"]:
            assert f'value="{html.escape(form["url"])}"' in answer.text


async def test_hostile_values_render_inert(console: Any) -> None:
    url = f"http://127.0.0.1:9/{SCRIPT}{IMG}"
    answer = await _create(console, url=url, description=f"{SCRIPT} {IMG}")
    assert answer.status_code == 201, answer.text
    (endpoint,) = await _endpoints(console)
    assert endpoint.url == url
    async with session_scope(console.state.sessionmaker) as session:
        await repository.add_delivery(
            session,
            event_id="msg_hostile",
            endpoint_id=endpoint.id,
            type="webhook.test",
            state=DeliveryState.FAILED,
            status_code=500,
            error=SCRIPT,
            response=f"{SCRIPT}{IMG}",
        )
    for path in (
        "/console/webhooks",
        f"/console/webhooks/{endpoint.id}",
        f"/console/webhooks/{endpoint.id}/delete",
    ):
        page = await console.http.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img" not in page.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, path
        assert page.text.count("<script") == 1  # the console's own file


async def test_test_event_replay_and_the_log(console: Any, receiver: Receiver) -> None:
    assert (await _create(console, url=receiver.url)).status_code == 201
    (endpoint,) = await _endpoints(console)
    receiver.answer = lambda _: (202, {}, b"<b>accepted</b>")
    answer = await console.http.post(
        f"/console/webhooks/{endpoint.id}/test", data={"csrf_token": console.csrf}
    )
    assert answer.status_code == 303
    assert "?tested=" in answer.headers["location"]
    page = await console.http.get(answer.headers["location"])
    result = re.search(
        r'<div class="notice" role="status" id="test-result">(.*?)</div>', page.text, re.S
    )
    assert result is not None, page.text
    assert 'data-field="test-status">202<' in result.group(1)
    assert "&lt;b&gt;accepted&lt;/b&gt;" in result.group(1)
    (received,) = receiver.requests
    received.verify(endpoint.secret)
    assert received.id in page.text  # the log shows its event id
    # The list shows each endpoint's newest delivery.
    assert (await _create(console, url=receiver.url + "/other")).status_code == 201
    listing = await console.http.get("/console/webhooks")
    last = {}
    for row in re.findall(r"<tr>(.*?)</tr>", listing.text, re.S)[1:]:
        url = re.search(r"<code>([^<]+)</code>", row)
        cell = re.findall(r"<td>(.*?)</td>", row, re.S)[-1]
        assert url is not None
        last[url.group(1)] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", cell)).strip()
    assert last[receiver.url].startswith("DELIVERED 202 webhook.test"), last
    assert last[receiver.url + "/other"] == "none yet", last

    async with session_scope(console.state.sessionmaker) as session:
        (delivery,) = await session.scalars(select(WebhookDelivery))
    replayed = await console.http.post(
        f"/console/webhooks/{endpoint.id}/deliveries/{delivery.id}/replay",
        data={"csrf_token": console.csrf},
    )
    assert replayed.status_code == 303
    page = await console.http.get(replayed.headers["location"])
    assert "Delivery queued again" in page.text
    row = re.search(rf'<tr data-delivery="{delivery.id}">(.*?)</tr>', page.text, re.S)
    assert row is not None and 'data-field="state">PENDING<' in row.group(1)

    missing = await console.http.post(
        f"/console/webhooks/{endpoint.id}/deliveries/999999/replay",
        data={"csrf_token": console.csrf},
    )
    assert missing.status_code == 404 and "does not exist" in missing.text


async def test_an_unreachable_receiver_is_shown(console: Any, receiver: Receiver) -> None:
    assert (await _create(console, url=receiver.url)).status_code == 201
    (endpoint,) = await _endpoints(console)
    await receiver.stop()  # connection refused
    answer = await console.http.post(
        f"/console/webhooks/{endpoint.id}/test", data={"csrf_token": console.csrf}
    )
    page = await console.http.get(answer.headers["location"])
    result = re.search(
        r'<div class="error" role="status" id="test-result">(.*?)</div>', page.text, re.S
    )
    assert result is not None, page.text
    assert 'data-field="test-status">no answer<' in result.group(1)


async def test_log_pages_newest_first(console: Any) -> None:
    assert (await _create(console, url="http://127.0.0.1:9/hook")).status_code == 201
    (endpoint,) = await _endpoints(console)
    async with session_scope(console.state.sessionmaker) as session:
        for i in range(60):
            await repository.add_delivery(
                session, event_id=f"msg_{i:03d}", endpoint_id=endpoint.id, type="email.sent"
            )
    first = await console.http.get(f"/console/webhooks/{endpoint.id}")
    ids = re.findall(r"<code>(msg_\d{3})</code>", first.text)
    assert ids == [f"msg_{i:03d}" for i in range(59, 9, -1)]
    older = re.search(r'<a rel="next" href="([^"]+)">Older</a>', first.text)
    assert older is not None
    second = await console.http.get(html.unescape(older.group(1)))
    ids = re.findall(r"<code>(msg_\d{3})</code>", second.text)
    assert ids == [f"msg_{i:03d}" for i in range(9, -1, -1)]
    assert 'rel="next"' not in second.text
    bad = await console.http.get(f"/console/webhooks/{endpoint.id}?before=x")
    assert bad.status_code == 422 and "cursor" in bad.text


async def test_replay_failed_since(console: Any) -> None:
    assert (await _create(console, url="http://127.0.0.1:9/hook")).status_code == 201
    (endpoint,) = await _endpoints(console)
    now = utcnow()
    async with session_scope(console.state.sessionmaker) as session:
        for i, age in enumerate((timedelta(minutes=5), timedelta(hours=2), timedelta(days=3))):
            await repository.add_delivery(
                session,
                event_id=f"msg_{i}",
                endpoint_id=endpoint.id,
                type="email.sent",
                state=DeliveryState.FAILED,
                attempts=7,
                last_attempt_at=now - age,
            )
    since = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    answer = await console.http.post(
        f"/console/webhooks/{endpoint.id}/replay-failed",
        data={"csrf_token": console.csrf, "since": since},
    )
    assert answer.status_code == 303 and answer.headers["location"].endswith("?replayed=2")
    page = await console.http.get(answer.headers["location"])
    assert "2 failed deliveries queued again." in page.text
    async with session_scope(console.state.sessionmaker) as session:
        rows = await session.execute(select(WebhookDelivery.event_id, WebhookDelivery.state))
        states = {event_id: state for event_id, state in rows.all()}
    assert states == {"msg_0": "PENDING", "msg_1": "PENDING", "msg_2": "FAILED"}

    refused = await console.http.post(
        f"/console/webhooks/{endpoint.id}/replay-failed",
        data={"csrf_token": console.csrf, "since": f"yesterday {SCRIPT}"},
    )
    assert refused.status_code == 422
    assert "<strong>since</strong>" in refused.text and "<script>alert" not in refused.text


async def test_disable_enable_rotate_delete(console: Any, receiver: Receiver) -> None:
    created = await _create(console, url=receiver.url)
    first_secret = re.search(r'id="endpoint-secret">([^<]+)<', created.text)
    assert first_secret is not None
    (endpoint,) = await _endpoints(console)
    base = f"/console/webhooks/{endpoint.id}"
    form = {"csrf_token": console.csrf}

    answer = await console.http.post(f"{base}/disable", data=form)
    assert answer.status_code == 303
    page = await console.http.get(answer.headers["location"])
    assert "disabled by an admin" in page.text
    assert not (await _endpoints(console))[0].enabled
    answer = await console.http.post(f"{base}/enable", data=form)
    assert (await _endpoints(console))[0].enabled

    rotated = await console.http.post(f"{base}/rotate-secret", data=form)
    assert rotated.status_code == 200
    second_secret = re.search(r'id="endpoint-secret">([^<]+)<', rotated.text)
    assert second_secret is not None and second_secret.group(1) != first_secret.group(1)
    assert "the previous secret signs too until" in rotated.text
    (stored,) = await _endpoints(console)
    assert stored.secret == second_secret.group(1)
    assert stored.previous_secret == first_secret.group(1)

    confirm = await console.http.get(f"{base}/delete")
    assert confirm.status_code == 200 and "Delete endpoint" in confirm.text
    assert len(await _endpoints(console)) == 1  # asking is not deleting
    answer = await console.http.post(f"{base}/delete", data=form)
    assert answer.status_code == 303 and answer.headers["location"].endswith("notice=deleted")
    assert await _endpoints(console) == []
    gone = await console.http.get(base)
    assert gone.status_code == 404
    async with session_scope(console.state.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


# -- in a real browser, against `mailer dev` (or `mailer api` + `mailer worker`) -----------


async def _reload_until(page: Any, locator: Any, text: str, *, timeout: float = 30.0) -> None:
    """Reload the page until `locator` shows `text` (the log does not update by itself)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await locator.count() and text in await locator.first.inner_text():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{text!r} not shown in {timeout} s: {await page.content()}")
        await page.wait_for_timeout(300)
        await page.reload()


async def test_webhook_pages_in_a_browser(
    webhook_server: Server, page: Any, receiver: Receiver
) -> None:
    server = webhook_server
    dialogs: list[str] = []

    async def on_dialog(dialog: Any) -> None:  # the rotation asks first
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", on_dialog)
    key = await make_key(server.settings, "console", admin=True)
    await browser_sign_in(page, server, key)
    await page.get_by_role("link", name="Webhooks", exact=True).click()
    await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    await page.get_by_label("URL").fill(receiver.url)
    await page.get_by_label("Description").fill("Orders app")
    await screenshot(page, "webhooks")
    await page.get_by_role("button", name="Create endpoint").click()
    secret = (await page.locator("#endpoint-secret").inner_text()).strip()
    assert secret.startswith("whsec_")
    await screenshot(page, "webhook-created")
    endpoint_url = re.sub(r"\?.*", "", page.url)
    await page.get_by_role("link", name="← Webhooks").click()
    await expect(page.get_by_role("cell", name="Orders app")).to_be_visible()
    await expect(page.locator("#endpoint-secret")).to_have_count(0)  # shown once
    await page.get_by_role("link", name=receiver.url).click()
    endpoint_url = page.url

    # The test event: the receiver's answer on the page, signed with the secret shown.
    receiver.answer = lambda _: (201, {}, b"<i>got it</i>")
    await page.get_by_role("button", name="Send test event").click()
    await expect(page.locator('[data-field="test-status"]')).to_have_text("201")
    await expect(page.locator("#test-result")).to_contain_text("<i>got it</i>")
    (test_request,) = receiver.requests
    assert test_request.verify(secret)["type"] == "webhook.test"
    log = page.locator("tbody tr")
    await expect(log).to_have_count(1)
    await expect(log.first).to_contain_text(test_request.id)
    await expect(log.first.locator('[data-field="state"]')).to_have_text("DELIVERED")
    await screenshot(page, "webhook-test")

    # Email events, delivered by the worker's dispatcher, show in the log.
    receiver.answer = lambda _: (200, {}, b"ok")
    with server.api(key) as api:
        template = api.post("/api/v1/templates", json={"name": "t", "subject": "Hi", "text": "x"})
        batch = api.post(
            "/api/v1/batches",
            json={
                "template_id": template.json()["id"],
                "recipients": [{"email": "hook1@example.com"}, {"email": "hook2@example.com"}],
            },
        )
        assert batch.status_code == 201, batch.text
    await receiver.wait_for(
        lambda r: sum(x.event["type"] == "email.sent" for x in r.accepted()) == 2, timeout=60
    )
    await _reload_until(page, page.locator("tbody"), "email.sent")

    # Replay the test event: delivered again with its first webhook-id.
    await page.goto(endpoint_url)
    test_row = page.locator("tbody tr", has_text=test_request.id)
    await test_row.get_by_role("button", name=re.compile(r"^Replay delivery")).click()
    await expect(page.locator("#notice")).to_contain_text("Delivery queued again")
    await receiver.wait_for(lambda r: [x.id for x in r.requests].count(test_request.id) == 2)
    await _reload_until(page, page.locator("tbody tr", has_text=test_request.id), "DELIVERED")

    # A failed test, then "replay everything failed since".
    receiver.answer = lambda _: (500, {}, b"down")
    await page.get_by_role("button", name="Send test event").click()
    await expect(page.locator('[data-field="test-status"]')).to_have_text("500")
    failed_id = receiver.requests[-1].id
    failed_row = page.locator("tbody tr", has_text=failed_id)
    await expect(failed_row.locator('[data-field="state"]')).to_have_text("FAILED")
    receiver.answer = lambda _: (200, {}, b"ok")
    await page.get_by_role("button", name="Replay failed").click()
    await expect(page.locator("#notice")).to_have_text("1 failed delivery queued again.")
    await receiver.wait_for(lambda r: any(x.id == failed_id for x in r.accepted()))
    await _reload_until(page, page.locator("tbody tr", has_text=failed_id), "DELIVERED")
    await screenshot(page, "webhook-log")

    # Rotate: the new secret is shown once and signs the next test (beside the old one).
    await page.get_by_role("button", name="Rotate secret").click()
    new_secret = (await page.locator("#endpoint-secret").inner_text()).strip()
    assert new_secret.startswith("whsec_") and new_secret != secret and len(dialogs) == 1
    await page.goto(endpoint_url)
    await page.get_by_role("button", name="Send test event").click()
    await expect(page.locator('[data-field="test-status"]')).to_have_text("200")
    receiver.requests[-1].verify(new_secret)
    receiver.requests[-1].verify(secret)

    # Disable, enable is offered; delete after the confirmation page.
    await page.get_by_role("button", name="Disable").click()
    await expect(page.locator("#endpoint-state")).to_contain_text("disabled by an admin")
    await expect(page.get_by_role("button", name="Enable")).to_be_visible()
    await screenshot(page, "webhook-disabled")
    await page.get_by_role("link", name="Delete…").click()
    await expect(page.get_by_role("heading", name=re.compile("^Delete webhook"))).to_be_visible()
    await screenshot(page, "webhook-delete")
    await page.get_by_role("button", name="Delete endpoint").click()
    await expect(page.locator("#notice")).to_contain_text("Endpoint deleted")
    await expect(page.locator("tbody")).to_contain_text("No endpoints yet.")

    # The overview lists the live worker with the messages it sent (2) and its rate.
    await page.goto(f"{server.url}/console/")
    sent = page.locator('#worker-rates [data-field="sent"]')
    await _reload_until(page, sent, "2", timeout=60)
    await expect(sent).to_have_text(["2"])  # one worker, which sent the batch's 2 messages
    await expect(page.locator("#worker-rates tbody tr").first).to_contain_text("/s")
    await screenshot(page, "overview-workers")


async def test_hostile_endpoint_values_inert_in_a_browser(
    webhook_server: Server, page: Any
) -> None:
    server = webhook_server
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    key = await make_key(server.settings, "console", admin=True)
    await browser_sign_in(page, server, key)
    await page.goto(f"{server.url}/console/webhooks")
    hostile_url = f"http://127.0.0.1:9/{SCRIPT}{IMG}"
    await page.get_by_label("URL").fill(hostile_url)
    await page.get_by_label("Description").fill(f"{SCRIPT} {IMG} javascript:alert(1)")
    await page.get_by_role("button", name="Create endpoint").click()
    await expect(page.locator("#endpoint-description")).to_have_text(
        f"{SCRIPT} {IMG} javascript:alert(1)"
    )
    await page.get_by_role("link", name="← Webhooks").click()
    await expect(page.locator("tbody")).to_contain_text(SCRIPT)
    assert await page.locator("img").count() == 0
    assert await page.locator("script").count() == 1  # the console's own file
    assert dialogs == []
    await screenshot(page, "hostile-webhook")
    # A refusal comes back as a form error, with what was typed kept.
    await page.get_by_label("URL").fill("http://127.0.0.1:9/hook")
    assert await page.get_by_label("email.nope", exact=True).count() == 0  # not offered
    await page.evaluate("document.querySelector('input[name=events]').value = 'email.nope'")
    await page.locator("input[name=events]").first.check()
    await page.get_by_role("button", name="Create endpoint").click()
    await expect(page.locator("#form-errors")).to_contain_text("email.nope")
    await expect(page.get_by_label("URL")).to_have_value("http://127.0.0.1:9/hook")
