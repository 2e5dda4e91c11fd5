"""Hostile data renders inert: markup and javascript: URLs held by a template name, a tag,
a metadata value, a suppression note and a recipient address show as text, and no script
runs (a dialog would fail the test)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from playwright.async_api import expect
from sqlalchemy import update

from mailer.models import Batch, Event, Recipient
from tests.console.conftest import Server, make_key, run_db, screenshot, sign_in

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
JS_URL = "javascript:alert(1)"
HOSTILE = f"{SCRIPT} {IMG} {JS_URL}"
ADDRESS = f"{SCRIPT}{IMG}@example.com"


async def _assert_inert(page: Any, dialogs: list[str], *texts: str) -> None:
    body = page.locator("body")
    for text in texts:
        await expect(body).to_contain_text(text)
    assert await page.locator("img").count() == 0
    assert await page.locator("script").count() == 1  # the console's own file
    assert await page.locator('[href^="javascript:" i], [src^="javascript:" i]').count() == 0
    assert await page.locator("[onerror]").count() == 0
    assert dialogs == []


async def test_hostile_values_render_as_text(server: Server, page: Any) -> None:
    dialogs: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    key = await make_key(server.settings, "console", admin=True)
    with server.api(key) as api:
        template = api.post(
            "/api/v1/templates",
            json={
                "name": HOSTILE,
                "subject": "Hi",
                "html": f'<p>Hi</p><a href="{JS_URL}">link</a><script>alert(2)</script>',
            },
        )
        assert template.status_code == 201, template.text
        template_id = template.json()["id"]
        batch = api.post(
            "/api/v1/batches",
            json={
                "template_id": template_id,
                "recipients": [{"email": "someone@example.com"}],
                "metadata": {"note": HOSTILE, "link": JS_URL},
            },
        )
        assert batch.status_code == 201, batch.text
        batch_id = batch.json()["id"]

    async def plant(session: Any) -> None:
        # Values the API would refuse today, as older data or another writer might hold.
        await session.execute(
            update(Batch).where(Batch.id == batch_id).values(tags={"campaign": IMG, IMG: "x"})
        )
        await session.execute(
            update(Recipient).where(Recipient.batch_id == batch_id).values(email=ADDRESS)
        )
        await session.execute(update(Event).where(Event.batch_id == batch_id).values(email=ADDRESS))

    await run_db(server.settings, plant)
    await sign_in(page, server, key)

    await page.goto(f"{server.url}/console/templates")
    await _assert_inert(page, dialogs, HOSTILE)
    await page.goto(f"{server.url}/console/templates/{template_id}")
    await _assert_inert(page, dialogs, HOSTILE)
    await expect(page.frame_locator("#preview").locator("a")).to_have_text("link")
    await screenshot(page, "hostile-template")

    await page.goto(f"{server.url}/console/batches")
    await _assert_inert(page, dialogs, f"campaign={IMG}")
    await page.goto(f"{server.url}/console/batches?tag={quote(HOSTILE)}")
    await expect(page.get_by_label("Tag")).to_have_value(HOSTILE)
    await _assert_inert(page, dialogs)

    await page.goto(f"{server.url}/console/batches/{batch_id}")
    await _assert_inert(page, dialogs, f"campaign={IMG}", ADDRESS, JS_URL)
    metadata = await page.locator("pre").first.inner_text()
    assert SCRIPT in metadata and JS_URL in metadata
    await screenshot(page, "hostile-batch")

    await page.goto(f"{server.url}/console/addresses?email={quote(ADDRESS)}")
    await _assert_inert(page, dialogs, ADDRESS)
    await expect(page.locator(".message")).to_have_count(1)

    await page.goto(f"{server.url}/console/suppressions")
    await page.get_by_label("Address", exact=True).fill("victim@example.com")
    await page.get_by_label("Note").fill(HOSTILE)
    await page.get_by_role("button", name="Suppress").click()
    await expect(page.locator("#notice")).to_have_text("Address suppressed.")
    await _assert_inert(page, dialogs, SCRIPT, "onerror=alert(1)", JS_URL)
    await page.goto(f"{server.url}/console/addresses?email=victim@example.com")
    await _assert_inert(page, dialogs, SCRIPT)
    await screenshot(page, "hostile-suppression")
