"""Variables a template uses: declared ones are checked at save, undeclared ones (in a
template that declares none) on every recipient of a batch; {{unsubscribe_url}} needs a
batch with unsubscribe on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from mailer.db import session_scope
from mailer.models import Batch
from tests.fixtures.client import ApiClient, auth

TEMPLATES = "/api/v1/templates"


async def _save(client: ApiClient, key: str, **body: Any) -> Any:
    payload = {"name": "T", **body}
    return await client.http.post(TEMPLATES, json=payload, headers=auth(key))


async def _batches(client: ApiClient) -> int:
    async with session_scope(client.state.sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(Batch)) or 0)


async def test_undeclared_variable_is_422_at_save_naming_it_and_where(
    client: ApiClient, send_key: str
) -> None:
    response = await _save(
        client,
        send_key,
        subject="Hello {{name}}",
        html="<p>Hi {{name}}</p>\n<p>{{first_name}}</p>",
        variables={"name": {"type": "string"}},
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "undeclared_variable"
    (detail,) = error["details"]
    assert detail["variable"] == "first_name"
    assert (detail["field"], detail["line"], detail["column"]) == ("html", 2, 4)
    assert "first_name" in detail["message"] and "html line 2, column 4" in detail["message"]
    # a PUT that starts using an undeclared variable is refused the same way
    created = await _save(
        client, send_key, html="<p>{{name}}</p>", variables={"name": {"type": "string"}}
    )
    put = await client.http.put(
        f"{TEMPLATES}/{created.json()['id']}",
        json={"text": "{{nickname}}"},
        headers=auth(send_key),
    )
    assert put.status_code == 422
    assert put.json()["error"]["details"][0]["variable"] == "nickname"


async def test_save_answers_with_the_variables_found(client: ApiClient, send_key: str) -> None:
    response = await _save(
        client, send_key, subject="{{greeting}}", html="<p>Hi {{first_name}} {{greeting}}</p>"
    )
    assert response.status_code == 201, response.text
    assert response.json()["usedVariables"] == ["greeting", "first_name"]
    got = await client.http.get(f"{TEMPLATES}/{response.json()['id']}", headers=auth(send_key))
    assert got.json()["usedVariables"] == ["greeting", "first_name"]


async def test_unsubscribe_url_cannot_be_declared(client: ApiClient, send_key: str) -> None:
    response = await _save(
        client,
        send_key,
        html="<a href='{{unsubscribe_url}}'>x</a>",
        variables={"unsubscribe_url": {"type": "string"}},
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "variables.unsubscribe_url"
    # used without declaring it, beside declared ones: fine
    ok = await _save(
        client,
        send_key,
        html="<p>{{name}}</p><a href='{{unsubscribe_url}}'>x</a>",
        variables={"name": {"type": "string"}},
    )
    assert ok.status_code == 201, ok.text


async def test_batch_reports_recipients_missing_a_used_variable(
    client: ApiClient, send_key: str
) -> None:
    template = (await _save(client, send_key, html="<p>Hi {{first_name}}</p>")).json()
    recipients: list[dict[str, Any]] = [
        {"email": f"u{i}@example.com", "variables": {"first_name": f"F{i}"}} for i in range(5)
    ]
    recipients[3]["variables"] = {}
    recipients[4]["variables"] = {"first_name": None}
    body = {"template_id": template["id"], "recipients": recipients}
    response = await client.http.post("/api/v1/batches", json=body, headers=auth(send_key))
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [(d["field"], d["message"]) for d in details] == [
        ("recipients[3].variables.first_name", "is missing"),
        ("recipients[4].variables.first_name", "is missing"),
    ]
    assert await _batches(client) == 0
    for spelling in ("allow_missing_variables", "allowMissingVariables"):
        allowed = await client.http.post(
            "/api/v1/batches", json={**body, spelling: True}, headers=auth(send_key)
        )
        assert allowed.status_code == 201, allowed.text


async def test_unsubscribe_url_needs_unsubscribe(client: ApiClient, send_key: str) -> None:
    for html in ("<a href='{{unsubscribe_url}}'>x</a>", "{{{unsubscribe_url}}}"):
        template = (await _save(client, send_key, html=html)).json()
        assert template["usedVariables"] == ["unsubscribe_url"]
        body = {
            "template_id": template["id"],
            "recipients": [{"email": "a@example.com"}],
            "unsubscribe": False,
        }
        response = await client.http.post("/api/v1/batches", json=body, headers=auth(send_key))
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "unsubscribe"
        # with unsubscribe on (the default), recipients need not give it
        del body["unsubscribe"]
        ok = await client.http.post("/api/v1/batches", json=body, headers=auth(send_key))
        assert ok.status_code == 201, ok.text


async def test_missing_variable_found_in_a_large_batch(client: ApiClient, send_key: str) -> None:
    # Large batches are checked while they are written (PostgreSQL): same report.
    template = (await _save(client, send_key, html="<p>Hi {{first_name}}</p>")).json()
    recipients: list[dict[str, Any]] = [
        {"email": f"u{i}@example.com", "variables": {"first_name": "F"}} for i in range(2500)
    ]
    recipients[2100]["variables"] = {"other": 1}
    body = {"template_id": template["id"], "recipients": recipients}
    response = await client.http.post("/api/v1/batches", json=body, headers=auth(send_key))
    assert response.status_code == 422
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert fields == ["recipients[2100].variables.first_name"]
    assert await _batches(client) == 0


async def test_render_preview_shows_an_example_unsubscribe_link(
    client: ApiClient, send_key: str
) -> None:
    template = (await _save(client, send_key, html="<a href='{{unsubscribe_url}}'>x</a>")).json()
    response = await client.http.post(
        f"{TEMPLATES}/{template['id']}/render",
        json={"variables": {"unsubscribe_url": "evil"}},
        headers=auth(send_key),
    )
    assert response.status_code == 200, response.text
    html = response.json()["html"]
    assert "/api/v1/unsubscribe/example-token'" in html and "evil" not in html
