"""The /templates API: the Node service's examples, versions, rendering, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from mailer.models import TemplateVersion
from tests.fixtures.client import auth
from tests.fixtures.errors import assert_error

TEMPLATES = "/api/v1/templates"

# The Node service's documented "Create template" request, byte for byte.
ORIGINAL_CREATE = b"""{
  "name": "Welcome Email",
  "html": "<h1>Welcome {{name}}!</h1>",
  "text": "Welcome {{name}}!",
  "variables": {
    "name": { "type": "string" }
  }
}"""


async def create(client: Any, key: str, **body: Any) -> dict[str, Any]:
    payload = {"name": "T", "html": "<p>Hi {{name}}</p>", **body}
    response = await client.http.post(TEMPLATES, json=payload, headers=auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def render(client: Any, key: str, template_id: str, variables: Any) -> Any:
    return await client.http.post(
        f"{TEMPLATES}/{template_id}/render", json={"variables": variables}, headers=auth(key)
    )


async def version_rows(client: Any, template_id: str) -> list[dict[str, Any]]:
    async with client.state.sessionmaker() as session:
        rows = await session.scalars(
            select(TemplateVersion)
            .where(TemplateVersion.template_id == template_id)
            .order_by(TemplateVersion.version)
        )
        return [{c.key: getattr(r, c.key) for c in TemplateVersion.__table__.columns} for r in rows]


async def test_original_spec_create_list_get_delete(client: Any, send_key: str) -> None:
    response = await client.http.post(
        TEMPLATES,
        content=ORIGINAL_CREATE,
        headers={**auth(send_key), "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "Welcome Email"
    assert created["subject"] == "Welcome Email"  # defaults to the name
    assert created["html"] == "<h1>Welcome {{name}}!</h1>"
    assert created["text"] == "Welcome {{name}}!"
    assert created["variables"]["name"]["type"] == "string"
    assert created["variables"]["name"]["required"] is True
    assert created["version"] == 1
    assert {"id", "createdAt", "updatedAt", "versionId"} <= set(created)
    template_id = created["id"]

    listed = await client.http.get(TEMPLATES, headers=auth(send_key))
    assert listed.status_code == 200
    page = listed.json()
    assert (page["total"], page["limit"], page["offset"]) == (1, 100, 0)
    assert page["data"] == [created]

    got = await client.http.get(f"{TEMPLATES}/{template_id}", headers=auth(send_key))
    assert got.status_code == 200
    assert got.json() == created

    deleted = await client.http.delete(f"{TEMPLATES}/{template_id}", headers=auth(send_key))
    assert deleted.status_code == 204
    assert deleted.content == b""
    listed = await client.http.get(TEMPLATES, headers=auth(send_key))
    assert listed.json()["total"] == 0 and listed.json()["data"] == []


async def test_deleted_template_is_gone_everywhere(client: Any, send_key: str) -> None:
    template_id = (await create(client, send_key))["id"]
    rows_before = await version_rows(client, template_id)
    url = f"{TEMPLATES}/{template_id}"
    assert (await client.http.delete(url, headers=auth(send_key))).status_code == 204
    assert_error(await client.http.get(url, headers=auth(send_key)), 404, "not_found")
    assert_error(await render(client, send_key, template_id, {"name": "x"}), 404, "not_found")
    assert_error(await client.http.delete(url, headers=auth(send_key)), 404, "not_found")
    put = await client.http.put(url, json={"subject": "s"}, headers=auth(send_key))
    assert_error(put, 404, "not_found")
    # Soft delete: versions stay for batches created with them.
    assert await version_rows(client, template_id) == rows_before


async def test_unknown_template_is_404(client: Any, send_key: str) -> None:
    url = f"{TEMPLATES}/01J0000000000000000000NONE"
    error = assert_error(await client.http.get(url, headers=auth(send_key)), 404, "not_found")
    assert "01J0000000000000000000NONE" in error["message"]


async def test_put_creates_a_new_version_and_keeps_the_old_one(client: Any, send_key: str) -> None:
    created = await create(
        client,
        send_key,
        subject="Hello {{name}}",
        text="Hi {{name}}",
        variables={"name": {"type": "string"}},
    )
    template_id = created["id"]
    [v1_before] = await version_rows(client, template_id)

    response = await client.http.put(
        f"{TEMPLATES}/{template_id}",
        json={"html": "<p>Bye {{name}}</p>"},
        headers=auth(send_key),
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["id"] == template_id
    assert updated["version"] == 2
    assert updated["versionId"] != created["versionId"]
    assert updated["html"] == "<p>Bye {{name}}</p>"
    # Fields left out keep their current value.
    assert updated["subject"] == "Hello {{name}}"
    assert updated["text"] == "Hi {{name}}"
    assert updated["variables"] == created["variables"]
    assert updated["createdAt"] == created["createdAt"]

    v1_after, v2 = await version_rows(client, template_id)
    assert v1_after == v1_before
    assert (v2["version"], v2["html"]) == (2, "<p>Bye {{name}}</p>")
    got = await client.http.get(f"{TEMPLATES}/{template_id}", headers=auth(send_key))
    assert got.json() == updated
    rendered = await render(client, send_key, template_id, {"name": "Ann"})
    assert rendered.json()["html"] == "<p>Bye Ann</p>"


async def test_put_rejects_a_syntax_error_without_a_new_version(client: Any, send_key: str) -> None:
    template_id = (await create(client, send_key))["id"]
    response = await client.http.put(
        f"{TEMPLATES}/{template_id}", json={"html": "{{#if x}}open"}, headers=auth(send_key)
    )
    assert_error(response, 422, "template_syntax_error")
    assert len(await version_rows(client, template_id)) == 1
    got = await client.http.get(f"{TEMPLATES}/{template_id}", headers=auth(send_key))
    assert got.json()["version"] == 1


async def test_render_original_spec_example(client: Any, send_key: str) -> None:
    response = await client.http.post(
        TEMPLATES,
        content=ORIGINAL_CREATE,
        headers={**auth(send_key), "Content-Type": "application/json"},
    )
    rendered = await render(client, send_key, response.json()["id"], {"name": "John"})
    assert rendered.status_code == 200, rendered.text
    assert rendered.json() == {
        "subject": "Welcome Email",
        "html": "<h1>Welcome John!</h1>",
        "text": "Welcome John!",
    }


async def test_render_escapes_html_only(client: Any, send_key: str) -> None:
    template_id = (
        await create(
            client,
            send_key,
            subject="For {{name}}",
            html="<p>{{name}}</p><p>{{{name}}}</p>",
            text="Text {{name}}",
        )
    )["id"]
    value = '<b>Tom & "Jerry"</b>'
    rendered = (await render(client, send_key, template_id, {"name": value})).json()
    assert rendered["subject"] == f"For {value}"
    assert rendered["text"] == f"Text {value}"
    assert rendered["html"].startswith("<p>&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;</p>")
    assert rendered["html"].endswith(f"<p>{value}</p>")


async def test_render_checks_declared_variables(client: Any, send_key: str) -> None:
    template_id = (
        await create(
            client,
            send_key,
            variables={
                "name": {"type": "string"},
                "count": {"type": "integer", "required": False},
                "plan": {"type": "string", "default": "free"},
            },
            html="<p>{{name}} {{count}} {{plan}}</p>",
        )
    )["id"]
    missing = await render(client, send_key, template_id, {"count": 2})
    error = assert_error(missing, 422, "validation_error")
    assert [d["field"] for d in error["details"]] == ["variables.name"]
    assert "required" in error["details"][0]["message"]

    wrong = await render(client, send_key, template_id, {"name": 5, "count": "two"})
    error = assert_error(wrong, 422, "validation_error")
    assert {d["field"] for d in error["details"]} == {"variables.name", "variables.count"}

    ok = await render(client, send_key, template_id, {"name": "Ann"})
    assert ok.status_code == 200
    assert ok.json()["html"] == "<p>Ann  free</p>"

    not_an_object = await render(client, send_key, template_id, ["Ann"])
    error = assert_error(not_an_object, 422, "validation_error")
    assert error["details"][0]["field"] == "variables"


async def test_syntax_error_is_422_with_position(client: Any, send_key: str) -> None:
    response = await client.http.post(
        TEMPLATES,
        json={"name": "broken", "html": "<p>fine</p>\n  {{#if ok}}never closed"},
        headers=auth(send_key),
    )
    error = assert_error(response, 422, "template_syntax_error")
    [detail] = error["details"]
    assert detail["field"] == "html"
    assert (detail["line"], detail["column"]) == (2, 3)
    assert detail["message"]
    listed = await client.http.get(TEMPLATES, headers=auth(send_key))
    assert listed.json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "n", "subject": "{{#each}}", "text": "t"}, "subject"),
        ({"name": "n", "text": "ok {{/if}}"}, "text"),
    ],
)
async def test_syntax_error_names_the_part(
    client: Any, send_key: str, body: dict[str, Any], field: str
) -> None:
    response = await client.http.post(TEMPLATES, json=body, headers=auth(send_key))
    error = assert_error(response, 422, "template_syntax_error")
    assert error["details"][0]["field"] == field
    assert error["details"][0]["line"] == 1


@pytest.mark.parametrize(
    "html",
    [
        "<p>{{name.__class__}}</p>",
        "<p>{{name.__class__.__mro__}}</p>",
        "<p>{{lookup name '__class__'}}</p>",
        "<p>{{this.__init__.__globals__}}</p>",
    ],
)
async def test_hostile_template_renders_empty(client: Any, send_key: str, html: str) -> None:
    template_id = (await create(client, send_key, html=html))["id"]
    rendered = await render(client, send_key, template_id, {"name": "John"})
    assert rendered.status_code == 200, rendered.text
    assert rendered.json()["html"] == "<p></p>"


async def test_text_is_derived_from_html(client: Any, send_key: str) -> None:
    created = await create(
        client, send_key, html="<h1>Hello {{name}}</h1><p>See <a href='https://x.test'>this</a></p>"
    )
    assert created["text"] is None
    rendered = (await render(client, send_key, created["id"], {"name": "John"})).json()
    assert rendered["html"].startswith("<h1>Hello John</h1>")
    assert rendered["text"] is not None
    assert "Hello John" in rendered["text"]
    assert "https://x.test" in rendered["text"]
    assert "<h1>" not in rendered["text"]


async def test_text_only_template(client: Any, send_key: str) -> None:
    created = await client.http.post(
        TEMPLATES, json={"name": "plain", "text": "Hi {{name}}"}, headers=auth(send_key)
    )
    assert created.status_code == 201
    assert created.json()["html"] is None
    rendered = (await render(client, send_key, created.json()["id"], {"name": "<x>"})).json()
    assert rendered == {"subject": "plain", "html": None, "text": "Hi <x>"}


@pytest.mark.parametrize(
    "body",
    [
        {"name": "no body"},
        {"name": "empty", "html": "", "text": ""},
        {"html": "<p>x</p>"},
        {"name": "bad var", "html": "x", "variables": {"v": {"type": "date"}}},
        {"name": "bad var name", "html": "x", "variables": {"if": {"type": "string"}}},
        {
            "name": "bad default",
            "html": "x",
            "variables": {"n": {"type": "integer", "default": "a"}},
        },
    ],
)
async def test_invalid_templates_are_422(client: Any, send_key: str, body: dict[str, Any]) -> None:
    response = await client.http.post(TEMPLATES, json=body, headers=auth(send_key))
    error = assert_error(response, 422)
    assert error["details"]


async def test_list_paginates_and_rejects_large_limits(client: Any, send_key: str) -> None:
    ids = [(await create(client, send_key, name=f"t{i}"))["id"] for i in range(3)]
    first = (await client.http.get(TEMPLATES, params={"limit": 2}, headers=auth(send_key))).json()
    second = (
        await client.http.get(TEMPLATES, params={"limit": 2, "offset": 2}, headers=auth(send_key))
    ).json()
    assert (first["total"], len(first["data"]), len(second["data"])) == (3, 2, 1)
    assert sorted(t["id"] for t in first["data"] + second["data"]) == sorted(ids)
    for params in ({"limit": 1001}, {"limit": 0}, {"offset": -1}):
        response = await client.http.get(TEMPLATES, params=params, headers=auth(send_key))
        error = assert_error(response, 422, "validation_error")
        assert error["details"][0]["field"].startswith("query:")
    max_page = await client.http.get(TEMPLATES, params={"limit": 1000}, headers=auth(send_key))
    assert max_page.status_code == 200


async def test_concurrent_updates_each_get_their_own_version(client: Any, send_key: str) -> None:
    template_id = (await create(client, send_key))["id"]
    url = f"{TEMPLATES}/{template_id}"
    responses = await asyncio.gather(
        *(
            client.http.put(url, json={"html": f"<p>v{i} {{{{name}}}}</p>"}, headers=auth(send_key))
            for i in range(6)
        )
    )
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert sorted(r.json()["version"] for r in responses) == [2, 3, 4, 5, 6, 7]
    rows = await version_rows(client, template_id)
    assert [r["version"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    got = (await client.http.get(url, headers=auth(send_key))).json()
    assert got["version"] == 7
