"""The documented bounds on template work, through the API: at most MAX_TAGS tags per part
(compile cost) and text derived only from html up to MAX_DERIVE_INPUT_CHARS characters.
Over a bound: 422 naming the field, nothing stored."""

from __future__ import annotations

from typing import Any

from mailer.templates.rendering import MAX_DERIVE_INPUT_CHARS, MAX_TAGS
from tests.fixtures.client import auth
from tests.fixtures.errors import assert_error

TEMPLATES = "/api/v1/templates"
LONG_HTML = "<p>" + "x" * MAX_DERIVE_INPUT_CHARS + "{{name}}</p>"


async def _count(client: Any, key: str) -> int:
    total: int = (await client.http.get(TEMPLATES, headers=auth(key))).json()["total"]
    return total


async def test_too_many_tags_is_refused_naming_the_part(client: Any, send_key: str) -> None:
    before = await _count(client, send_key)
    html = "<p>" + "{{a}}" * (MAX_TAGS + 1) + "</p>"
    response = await client.http.post(
        TEMPLATES, json={"name": "big", "html": html, "text": "t"}, headers=auth(send_key)
    )
    error = assert_error(response, 422, "template_syntax_error")
    assert error["details"][0]["field"] == "html"
    assert f"at most {MAX_TAGS}" in error["details"][0]["message"]
    assert await _count(client, send_key) == before


async def test_long_html_needs_a_text_part(client: Any, send_key: str) -> None:
    before = await _count(client, send_key)
    response = await client.http.post(
        TEMPLATES, json={"name": "long", "html": LONG_HTML}, headers=auth(send_key)
    )
    error = assert_error(response, 422)
    assert error["details"] == [
        {
            "field": "text",
            "message": f"required when html is longer than {MAX_DERIVE_INPUT_CHARS:,} "
            "characters (the text part is derived only from shorter html)",
        }
    ]
    assert await _count(client, send_key) == before

    created = await client.http.post(
        TEMPLATES,
        json={"name": "long", "html": LONG_HTML, "text": "Hi {{name}}"},
        headers=auth(send_key),
    )
    assert created.status_code == 201, created.text
    template_id = created.json()["id"]
    # A new version that drops the text part of such html is refused the same way.
    update = await client.http.put(
        f"{TEMPLATES}/{template_id}", json={"text": None}, headers=auth(send_key)
    )
    assert assert_error(update, 422)["details"][0]["field"] == "text"
    short = await client.http.post(
        TEMPLATES, json={"name": "short", "html": "<p>{{name}}</p>"}, headers=auth(send_key)
    )
    assert short.status_code == 201
    grown = await client.http.put(
        f"{TEMPLATES}/{short.json()['id']}", json={"html": LONG_HTML}, headers=auth(send_key)
    )
    assert assert_error(grown, 422)["details"][0]["field"] == "text"
    current = await client.http.get(f"{TEMPLATES}/{short.json()['id']}", headers=auth(send_key))
    assert current.json()["version"] == 1


async def test_rendered_html_too_long_to_derive_text_from(client: Any, send_key: str) -> None:
    # The text derived at save does not parse ({{/if}} is lost with the image), so text is
    # derived from each rendered message; a variable can make that html too long.
    html = '{{#if on}}<img alt="" src="https://x.test/{{/if}}"><p>{{body}}</p>'
    created = await client.http.post(
        TEMPLATES, json={"name": "derived", "html": html}, headers=auth(send_key)
    )
    assert created.status_code == 201, created.text
    assert created.json()["text"] is None
    url = f"{TEMPLATES}/{created.json()['id']}/render"
    ok = await client.http.post(
        url, json={"variables": {"on": True, "body": "hello"}}, headers=auth(send_key)
    )
    assert ok.status_code == 200, ok.text
    assert "hello" in ok.json()["text"]
    too_long = await client.http.post(
        url,
        json={"variables": {"on": True, "body": "y" * MAX_DERIVE_INPUT_CHARS}},
        headers=auth(send_key),
    )
    error = assert_error(too_long, 422, "render_error")
    assert error["details"][0]["field"] == "text"
    assert f"{MAX_DERIVE_INPUT_CHARS:,}" in error["details"][0]["message"]
