"""RFC 8058 one-click unsubscribe over HTTP, using the URL found in a sent message."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mailer.db import session_scope
from mailer.models import Recipient, Suppression
from mailer.unsubscribe.tokens import make_token
from tests.fixtures.client import api_client, auth
from tests.fixtures.pipeline import create_template, make_recipients, post_batch, wait_batch
from tests.fixtures.smtp_server import SmtpTestServer


def _path_from_header(value: str) -> str:
    url = value.split(",")[0].strip().strip("<>")
    return url.split("http://127.0.0.1:3000", 1)[1]


async def test_one_click_from_the_sent_header(settings_factory: Any) -> None:
    with SmtpTestServer() as server:
        settings = settings_factory(mail_transport="smtp", smtp_url=server.url())
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key()
            template_id = await create_template(c.http, key)
            out = (await post_batch(c.http, key, template_id, make_recipients(2))).json()
            await wait_batch(c.http, key, out["id"])
            message = server.messages_to("user1@example.com")[0].parsed()
            path = _path_from_header(message["List-Unsubscribe"])

            page = await c.http.get(path)
            assert page.status_code == 200
            assert "user1@example.com" in page.text and "<form" in page.text
            async with session_scope(c.state.sessionmaker) as session:
                assert await session.get(Suppression, "user1@example.com") is None

            done = await c.http.post(
                path,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert done.status_code == 200 and "location" not in done.headers
            async with session_scope(c.state.sessionmaker) as session:
                row = await session.get(Suppression, "user1@example.com")
                assert row is not None and row.reason == "UNSUBSCRIBE"
                assert await session.get(Suppression, "user0@example.com") is None
            events = (
                await c.http.get(
                    f"/api/v1/batches/{out['id']}/events",
                    params={"type": "UNSUBSCRIBE"},
                    headers=auth(key),
                )
            ).json()
            assert events["total"] == 1

            # the next batch to the address records SUPPRESSED and sends nothing
            again = (await post_batch(c.http, key, template_id, make_recipients(2))).json()
            assert again["suppressed"] == 1
            await wait_batch(c.http, key, again["id"])
        assert len(server.messages_to("user1@example.com")) == 1
        assert len(server.messages_to("user0@example.com")) == 2


async def test_multipart_post_and_bad_tokens(client: Any, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    out = (await post_batch(client.http, send_key, template_id, make_recipients(1))).json()
    async with session_scope(client.state.sessionmaker) as session:
        recipient_id = await session.scalar(
            select(Recipient.id).where(Recipient.batch_id == out["id"])
        )
    assert recipient_id is not None
    token = make_token(recipient_id, client.state.settings.unsubscribe_key)
    forged = make_token(recipient_id, b"another-secret-another-secret")

    for bad in (forged, "garbage", token[:-2] + "AA"):
        assert (await client.http.get(f"/api/v1/unsubscribe/{bad}")).status_code == 404
        response = await client.http.post(
            f"/api/v1/unsubscribe/{bad}", data={"List-Unsubscribe": "One-Click"}
        )
        assert response.status_code == 404
    wrong_body = await client.http.post(f"/api/v1/unsubscribe/{token}", data={"x": "y"})
    assert wrong_body.status_code == 400
    async with session_scope(client.state.sessionmaker) as session:
        assert (await session.scalars(select(Suppression))).all() == []

    multipart = await client.http.post(
        f"/api/v1/unsubscribe/{token}", files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert multipart.status_code == 200
    async with session_scope(client.state.sessionmaker) as session:
        assert await session.get(Suppression, "user0@example.com") is not None
