"""What a finished batch says about itself: `result` beside COMPLETED, a delivery rate only
where the transport reports deliveries, and {{unsubscribe_url}} in the body matching the
List-Unsubscribe header."""

from __future__ import annotations

import re
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.console import sign_in
from tests.fixtures.pipeline import create_template, make_recipients, post_batch, wait_batch
from tests.fixtures.smtp_server import SmtpTestServer


async def _summary(c: ApiClient, key: str, batch_id: str) -> dict[str, Any]:
    response = await c.http.get(f"/api/v1/batches/{batch_id}/summary", headers=auth(key))
    out: dict[str, Any] = response.json()
    return out


async def test_outbox_all_sent_and_no_delivery_rate(settings_factory: Any, tmp_path: Path) -> None:
    settings = settings_factory(outbox_dir=tmp_path / "box")
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key()
        template_id = await create_template(c.http, key)
        out = (await post_batch(c.http, key, template_id, make_recipients(3))).json()
        batch = await wait_batch(c.http, key, out["id"])
        summary = await _summary(c, key, out["id"])
    assert batch["status"] == "COMPLETED" and batch["result"] == "all_sent"
    assert summary["result"] == "all_sent"
    # the outbox reports no deliveries: no rate that reads 0 %
    assert summary["deliveryRate"] is None
    assert "outbox" in summary["deliveryRateNote"]
    assert summary["bounceRate"] == 0


async def test_every_message_failed_reads_all_failed(settings_factory: Any) -> None:
    policy = {f"user{i}@example.com": 550 for i in range(3)}
    with SmtpTestServer(rcpt_policy=policy) as server:
        settings = settings_factory(mail_transport="smtp", smtp_url=server.url())
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key()
            template_id = await create_template(c.http, key)
            out = (await post_batch(c.http, key, template_id, make_recipients(3))).json()
            batch = await wait_batch(c.http, key, out["id"])
            partial = (await post_batch(c.http, key, template_id, make_recipients(4))).json()
            partial_batch = await wait_batch(c.http, key, partial["id"])
            summary = await _summary(c, key, out["id"])
            # the console says so too, beside COMPLETED
            await sign_in(c, await c.make_key("console", admin=True))
            page = (await c.http.get(f"/console/batches/{out['id']}")).text
            live = (await c.http.get(f"/console/batches/{out['id']}/live.json")).json()
            partial_page = (await c.http.get(f"/console/batches/{partial['id']}")).text
    assert "(every message failed: nothing was sent)" in page
    assert live["result"] == "all_failed"
    assert "(some messages failed)" in partial_page
    assert batch["status"] == "COMPLETED" and batch["counts"]["FAILED"] == 3
    assert batch["result"] == summary["result"] == "all_failed"
    assert partial_batch["result"] == "partial"
    assert summary["deliveryRate"] is None and "smtp" in summary["deliveryRateNote"]


async def test_unsubscribe_url_renders_the_header_url(
    settings_factory: Any, tmp_path: Path
) -> None:
    outbox = tmp_path / "box"
    settings = settings_factory(outbox_dir=outbox)
    html = "<p>{{name}}</p><a href='{{unsubscribe_url}}'>stop</a> {{{unsubscribe_url}}}"
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key()
        template_id = await create_template(
            c.http, key, html=html, text="Stop: {{unsubscribe_url}}"
        )
        # a recipient cannot put its own value in place of the link
        recipients = [
            {"email": "a@example.com", "variables": {"name": "A", "unsubscribe_url": "evil"}}
        ]
        out = (await post_batch(c.http, key, template_id, recipients)).json()
        await wait_batch(c.http, key, out["id"])
    (eml,) = outbox.glob("*.eml")
    message = BytesParser(policy=default_policy).parsebytes(eml.read_bytes())
    header = re.fullmatch(r"<([^>]+)>(, .*)?", str(message["List-Unsubscribe"]))
    assert header is not None
    url = header.group(1)
    assert "/api/v1/unsubscribe/" in url
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    body = html_part.get_content()
    assert f"href='{url}'" in body and f"</a> {url}" in body
    assert "evil" not in body
    assert text_part.get_content().strip() == f"Stop: {url}"
