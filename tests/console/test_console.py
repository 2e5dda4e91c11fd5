"""The console in a real browser: sign-in, live batch progress, templates, suppressions,
dead letters, keys, CSRF. Every page visited is saved as a screenshot."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect
from sqlalchemy import select

from mailer.models import Batch, DeadLetter, Recipient
from mailer.models.enums import RecipientStatus
from tests.console.conftest import Server, make_key, run_db, screenshot, sign_in

TEMPLATE = {
    "name": "Console test",
    "subject": "Hi {{name}}",
    "html": "<p>Hello {{name}}</p>",
    "variables": {"name": {"type": "string"}},
}


def _template(server: Server, key: str, **overrides: Any) -> str:
    with server.api(key) as api:
        answer = api.post("/api/v1/templates", json={**TEMPLATE, **overrides})
        assert answer.status_code == 201, answer.text
        template_id: str = answer.json()["id"]
        return template_id


def _batch(server: Server, key: str, template_id: str, count: int, **extra: Any) -> str:
    recipients = [
        {"email": f"user{i}@example.com", "variables": {"name": f"U{i}"}} for i in range(count)
    ]
    with server.api(key) as api:
        answer = api.post(
            "/api/v1/batches",
            json={"template_id": template_id, "recipients": recipients, **extra},
        )
        assert answer.status_code == 201, answer.text
        batch_id: str = answer.json()["id"]
        return batch_id


async def test_sign_in_and_every_page(server: Server, page: Any) -> None:
    key = server.seeded_key or await make_key(server.settings, "console", admin=True)
    await page.goto(f"{server.url}/")
    await expect(page).to_have_url(re.compile(r"/console/login"))
    await screenshot(page, "login")
    await sign_in(page, server, key)
    await expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    await expect(page.locator("#sending-state")).to_have_text("Running")
    await screenshot(page, "overview")
    if server.seeded_key:  # mailer dev seeded the sample template
        await page.get_by_role("link", name="Templates", exact=True).click()
        await expect(page.get_by_role("link", name="Welcome Email")).to_be_visible()
    for path, name in (
        ("/batches", "batches"),
        ("/addresses?email=nobody@example.com", "address-search"),
        ("/templates", "templates"),
        ("/suppressions", "suppressions"),
        ("/dead-letters", "dead-letters"),
        ("/keys", "keys"),
    ):
        answer = await page.goto(f"{server.url}/console{path}")
        assert answer is not None and answer.status == 200
        await screenshot(page, name)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{server.url}/console/")
    await screenshot(page, "overview-390")


async def test_send_scope_key_refused(server: Server, page: Any) -> None:
    key = await make_key(server.settings, "sender", admin=False)
    await page.goto(f"{server.url}/console/login")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#login-error")).to_contain_text("send scope only")
    await expect(page).to_have_url(re.compile(r"/console/login"))
    await page.goto(f"{server.url}/console/batches")
    await expect(page).to_have_url(re.compile(r"/console/login"))


async def test_batch_progresses_live_to_completed(server: Server, page: Any) -> None:
    key = await make_key(server.settings, "console", admin=True)
    template_id = _template(server, key)
    with server.api(key) as api:  # held by the reputation guard until resumed below
        assert api.post("/api/v1/admin/sending/pause", json={"reason": "test"}).is_success
    batch_id = _batch(server, key, template_id, 30, tags={"campaign": "live"})
    await sign_in(page, server, key)
    await page.goto(f"{server.url}/console/batches?tag=campaign%3Dlive")
    await page.get_by_role("link", name=batch_id).click()
    await expect(page.locator('[data-field="status"]')).to_have_text("SENDING")
    await expect(page.locator('[data-count="pending"]')).to_have_text("30")
    await page.evaluate("window.notReloaded = true")
    with server.api(key) as api:
        assert api.post("/api/v1/admin/sending/resume").is_success
    await expect(page.locator('[data-field="status"]')).to_have_text("COMPLETED", timeout=60_000)
    await expect(page.locator('[data-count="sent"]')).to_have_text("30")
    await expect(page.locator('[data-field="result"]')).to_have_text("(every message was sent)")
    assert await page.evaluate("window.notReloaded") is True
    await expect(page.locator("#cancel-form")).to_be_hidden()
    await screenshot(page, "batch")
    await page.goto(f"{server.url}/console/")
    await expect(page.locator(".legend .k-sent").first).to_contain_text("Sends: 30")
    await screenshot(page, "overview-traffic")
    await page.goto(f"{server.url}/console/batches/{batch_id}")
    await page.get_by_label("Type").select_option("SENT")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("tbody").last).to_contain_text("user0@example.com")
    await page.goto(f"{server.url}/console/addresses?email=user1@example.com")
    await expect(page.locator(".message")).to_contain_text("SENT")
    await expect(page.locator("#suppression-state")).to_contain_text("Not suppressed")
    await screenshot(page, "address")


async def test_template_edit_preview_and_syntax_error(server: Server, page: Any) -> None:
    key = await make_key(server.settings, "console", admin=True)
    template_id = _template(server, key)
    await sign_in(page, server, key)
    await page.goto(f"{server.url}/console/templates/{template_id}")
    preview = page.frame_locator("#preview")
    await expect(preview.locator("body")).to_contain_text("Hello sample name")
    await page.get_by_label("Sample variables for the preview (JSON)").fill('{"name": "Grace"}')
    await expect(preview.locator("body")).to_contain_text("Hello Grace")
    await page.get_by_label("HTML", exact=True).fill("<h2>Welcome aboard, {{name}}</h2>")
    await expect(preview.locator("h2")).to_have_text("Welcome aboard, Grace")
    await screenshot(page, "template-edit")
    await page.get_by_role("button", name="Save as a new version").click()
    await expect(page.get_by_role("link", name="Version 1")).to_be_visible()
    await page.get_by_label("HTML", exact=True).fill("<p>{{#if name}}unclosed</p>")
    await expect(preview.locator("#preview-error")).to_contain_text("line 1, column 4")
    await page.get_by_role("button", name="Save as a new version").click()
    await expect(page.locator("#template-errors")).to_contain_text("line 1, column 4")
    await screenshot(page, "template-error")


async def test_suppressions_add_search_remove_import(
    server: Server, page: Any, tmp_path: Any
) -> None:
    key = await make_key(server.settings, "console", admin=True)
    await sign_in(page, server, key)
    await page.goto(f"{server.url}/console/suppressions")
    await page.get_by_label("Address", exact=True).fill("Blocked@Example.com")
    await page.get_by_label("Note").fill("asked by phone")
    await page.get_by_role("button", name="Suppress").click()
    await expect(page.locator("#notice")).to_have_text("Address suppressed.")
    await page.get_by_label("Address starts with").fill("blocked")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("link", name="blocked@example.com")).to_be_visible()
    await page.get_by_role("button", name="Remove blocked@example.com").click()
    await expect(page.locator("#notice")).to_contain_text("removed")
    await expect(page.get_by_role("link", name="blocked@example.com")).to_have_count(0)
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,reason\nimported1@example.com,BOUNCE\nnot-an-address,\n")
    await page.get_by_label("CSV file").set_input_files(str(csv_file))
    await page.get_by_role("button", name="Import").click()
    await expect(page.locator("#import-status")).to_contain_text("1 added")
    await expect(page.locator("#import-status")).to_contain_text("1 invalid")
    await page.goto(f"{server.url}/console/suppressions?q=imported")
    await expect(page.get_by_role("link", name="imported1@example.com")).to_be_visible()
    await screenshot(page, "suppressions-after")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Download every suppression as CSV").click()
    exported = (await (await download.value).path()).read_text()
    assert "imported1@example.com,BOUNCE" in exported


async def test_retry_a_dead_letter(server: Server, page: Any) -> None:
    key = await make_key(server.settings, "console", admin=True)
    template_id = _template(server, key)
    batch_id = _batch(server, key, template_id, 2)
    with server.api(key) as api:  # wait for the batch to finish
        for _ in range(600):
            if api.get(f"/api/v1/batches/{batch_id}").json()["status"] == "COMPLETED":
                break
            await page.wait_for_timeout(100)

    async def fail_one(session: Any) -> None:
        # What a chunk that exhausted its attempts leaves: a FAILED message and its dead letter.
        recipient = (
            await session.scalars(select(Recipient).where(Recipient.batch_id == batch_id))
        ).first()
        recipient.status = RecipientStatus.FAILED
        recipient.last_error = "550 mailbox unavailable"
        batch = await session.get(Batch, batch_id)
        batch.sent_count -= 1
        batch.failed_count += 1
        session.add(
            DeadLetter(
                batch_id=batch_id,
                seq_start=recipient.seq,
                seq_end=recipient.seq + 1,
                recipient_count=1,
                recipient_ids=[recipient.id],
                error="550 mailbox unavailable",
                attempts=3,
            )
        )

    await run_db(server.settings, fail_one)
    await sign_in(page, server, key)
    await page.goto(f"{server.url}/console/dead-letters")
    await expect(page.locator("tbody")).to_contain_text("550 mailbox unavailable")
    await screenshot(page, "dead-letters-one")
    await page.get_by_role("button", name=re.compile(r"^Retry dead letter")).click()
    await expect(page.locator("#notice")).to_have_text("1 message(s) queued again.")
    await expect(page.locator("tbody")).to_contain_text("No dead letters.")
    await page.goto(f"{server.url}/console/batches/{batch_id}")
    await expect(page.locator('[data-count="sent"]')).to_have_text("2", timeout=60_000)


async def test_keys_create_revoke_ends_session_and_logout(server: Server, browser: Any) -> None:
    key = await make_key(server.settings, "console", admin=True)
    first = await (await browser.new_context()).new_page()
    await sign_in(first, server, key)
    await first.goto(f"{server.url}/console/keys")
    await first.get_by_label("Name").fill("second admin")
    await first.get_by_label("Scope").select_option("admin")
    await first.get_by_role("button", name="Create key").click()
    secret = (await first.locator("#created-secret").inner_text()).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    await screenshot(first, "keys-created")
    await first.goto(f"{server.url}/console/keys")  # shown once: not on the next view
    await expect(first.locator("#created-secret")).to_have_count(0)

    second = await (await browser.new_context()).new_page()
    await sign_in(second, server, secret)
    await second.goto(f"{server.url}/console/batches")
    await expect(second.get_by_role("heading", name="Batches")).to_be_visible()

    await first.get_by_role("button", name="Revoke second admin").click()
    await expect(first.locator("tbody")).to_contain_text("revoked")
    await second.goto(f"{server.url}/console/batches")
    await expect(second).to_have_url(re.compile(r"/console/login"))

    await first.get_by_role("button", name="Sign out").click()
    await expect(first).to_have_url(re.compile(r"/console/login"))
    await first.goto(f"{server.url}/console/keys")
    await expect(first).to_have_url(re.compile(r"/console/login"))
    await first.context.close()
    await second.context.close()


async def test_post_without_csrf_token_refused(server: Server, page: Any) -> None:
    key = await make_key(server.settings, "console", admin=True)
    await sign_in(page, server, key)
    refused = await page.request.post(
        f"{server.url}/console/suppressions/add", form={"email": "csrf@example.com"}
    )
    assert refused.status == 403
    assert "security token" in await refused.text()
    wrong = await page.request.post(
        f"{server.url}/console/suppressions/add",
        form={"email": "csrf@example.com", "csrf_token": "forged"},
    )
    assert wrong.status == 403
    await page.goto(f"{server.url}/console/suppressions?q=csrf")
    await expect(page.get_by_role("link", name="csrf@example.com")).to_have_count(0)
