"""Targeted bad input: header injection through variables, hostile templates, huge arrays,
invalid UTF-8 and lone surrogates, SQL metacharacters (stored verbatim), out-of-range
numbers, and wrong JSON types in every field of every JSON body. Never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from mailer.db import session_scope
from mailer.models import Recipient
from tests.fixtures.client import ApiClient, api_client, auth
from tests.fixtures.errors import assert_error
from tests.fixtures.pipeline import create_template, far_send_at, post_batch, wait_batch
from tests.fixtures.smtp_server import SmtpTestServer

V1 = "/api/v1"
INJECTIONS = [
    "Eve\r\nBcc: victim@example.net",
    "Eve\nX-Injected: yes",
    "Eve\rSubject: spoofed",
    "Eve\x07\x1b[31m",
    "Eve\x7f",
    "Eve\u0085Bcc: victim@example.net",
]


async def test_control_characters_never_reach_a_header(settings_factory: Any) -> None:
    """Variables rendered into the subject: the message is refused (FAILED, never sent);
    the same batch's clean recipients are sent. A `from` name with them is refused at once."""
    with SmtpTestServer() as server:
        settings = settings_factory(mail_transport="smtp", smtp_url=server.url())
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key(admin=True)
            template_id = await create_template(c.http, key)
            recipients = [
                {"email": f"bad{i}@example.com", "variables": {"name": value}}
                for i, value in enumerate(INJECTIONS)
            ]
            recipients.append({"email": "clean@example.com", "variables": {"name": "Ann"}})
            out = (await post_batch(c.http, key, template_id, recipients)).json()
            batch = await wait_batch(c.http, key, out["id"])
            async with session_scope(c.state.sessionmaker) as session:
                rows = await session.execute(select(Recipient.email, Recipient.status))
                states = {str(e): str(s) for e, s in rows.tuples()}
            for field in ("from", "reply_to"):
                for value in INJECTIONS[:3]:
                    extra: dict[str, Any] = {field: f"{value} <sender@example.com>"}
                    refused = await post_batch(
                        c.http,
                        key,
                        template_id,
                        [{"email": "x@example.com", "variables": {"name": "x"}}],
                        **extra,
                    )
                    assert_error(refused, 422, "validation_error")
            preview = await c.http.post(
                f"{V1}/templates/{template_id}/render",
                json={"variables": {"name": INJECTIONS[0]}},
                headers=auth(key),
            )
    received = [a for m in server.messages for a in m.rcpt_tos]
    assert received == ["clean@example.com"]
    assert all(b"victim" not in m.data and b"X-Injected" not in m.data for m in server.messages)
    assert batch["counts"]["FAILED"] == len(INJECTIONS) and batch["counts"]["SENT"] == 1
    assert {s for e, s in states.items() if e.startswith("bad")} == {"FAILED"}
    # A preview shows what a send would do: this subject cannot be sent.
    assert preview.status_code == 422, preview.text


@pytest.mark.parametrize(
    "template",
    [
        {"subject": "Hi\r\nBcc: victim@example.net", "text": "x"},
        {"subject": "Hi\nX-Injected: yes", "text": "x"},
    ],
)
async def test_templates_with_control_characters_in_the_subject_are_refused(
    client: ApiClient, send_key: str, template: dict[str, Any]
) -> None:
    response = await client.http.post(
        f"{V1}/templates", json={"name": "t", **template}, headers=auth(send_key)
    )
    assert_error(response, 422)


HOSTILE = [
    "{{__class__}}",
    "{{__class__.__mro__}}",
    "{{constructor.constructor}}",
    "{{name.__class__.__init__.__globals__}}",
    '{{lookup this "__class__"}}',
    "{{#with __class__}}{{__name__}}{{/with}}",
    "{{#each __dict__}}{{@key}}{{/each}}",
    "{{name.upper}}",
    "{{name.__len__}}",
]


@pytest.mark.parametrize("source", HOSTILE)
async def test_attribute_access_renders_nothing(
    client: ApiClient, send_key: str, source: str
) -> None:
    created = await client.http.post(
        f"{V1}/templates",
        json={"name": "h", "subject": "s", "text": f"[{source}]"},
        headers=auth(send_key),
    )
    if created.status_code == 422:
        return  # refused at creation is fine too
    assert created.status_code == 201, created.text
    rendered = await client.http.post(
        f"{V1}/templates/{created.json()['id']}/render",
        json={"variables": {"name": "ann"}},
        headers=auth(send_key),
    )
    assert rendered.status_code == 200, rendered.text
    assert rendered.json()["text"] == "[]"


@pytest.mark.parametrize(
    "source",
    [
        "{{#if a}}" * 2000 + "x" + "{{/if}}" * 2000,  # deep nesting
        "{{#each a}}" * 200 + "{{/each}}" * 200,
        "{{" * 100_000,
        "{{a}}" * 300_000,  # too many tags
        "{{> partial}}",  # partials: no way to recurse
        "{{#each a}}{{> each}}{{/each}}",
        "x" * 1_100_000,  # source over the limit
        "(" * 50_000 + "{{a (b (c (d" + ")" * 50_000 + "}}",
    ],
    ids=[
        "nesting",
        "each-nesting",
        "open-braces",
        "tags",
        "partial",
        "recursion",
        "size",
        "parens",
    ],
)
async def test_hostile_template_sources_are_refused(
    client: ApiClient, send_key: str, source: str
) -> None:
    response = await client.http.post(
        f"{V1}/templates",
        json={"name": "h", "subject": "s", "text": source},
        headers=auth(send_key),
    )
    assert response.status_code in (201, 422), response.text[:500]
    if response.status_code == 201:
        rendered = await client.http.post(
            f"{V1}/templates/{response.json()['id']}/render",
            json={"variables": {}},
            headers=auth(send_key),
        )
        assert rendered.status_code in (200, 422), rendered.text[:500]


async def test_huge_output_is_bounded(client: ApiClient, send_key: str) -> None:
    """{{#each}} over a big list of a big value: refused by the render limits, not an OOM."""
    created = await client.http.post(
        f"{V1}/templates",
        json={
            "name": "big",
            "subject": "s",
            "text": "{{#each items}}{{#each ../items}}{{../../big}}{{/each}}{{/each}}",
            "variables": {"items": {"type": "array"}, "big": {"type": "string"}},
        },
        headers=auth(send_key),
    )
    assert created.status_code == 201, created.text
    rendered = await client.http.post(
        f"{V1}/templates/{created.json()['id']}/render",
        json={"variables": {"items": list(range(3000)), "big": "x" * 10_000}},
        headers=auth(send_key),
    )
    assert_error(rendered, 422)


MILLION = 1_000_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            f"{V1}/batches",
            {"template_id": "t", "recipients": [{"email": "a@b.co"}] * MILLION},
        ),
        (f"{V1}/batches", {"template_id": "t", "recipients": [0] * MILLION}),
        (f"{V1}/admin/suppressions", {"emails": ["a@b.co"] * MILLION}),
        (f"{V1}/admin/dead-letters/retry", {"ids": [1] * MILLION}),
        (f"{V1}/templates/TID/render", {"variables": {"name": [1] * MILLION}}),
        (f"{V1}/admin/keys", {"name": "k", "scopes": ["send"] * MILLION}),
    ],
    ids=["recipients", "recipients-ints", "suppressions", "dead-letters", "variables", "scopes"],
)
async def test_million_element_arrays(
    client: ApiClient, admin_key: str, path: str, body: dict[str, Any]
) -> None:
    template_id = await create_template(client.http, admin_key)
    if "recipients" in body:
        body = {**body, "template_id": template_id}
    response = await client.http.post(
        path.replace("TID", template_id), json=body, headers=auth(admin_key), timeout=120
    )
    assert 400 <= response.status_code < 500, response.text[:500]
    assert set(response.json()) == {"error"}


INVALID_UTF8 = [
    b'{"name": "\xff\xfe"}',
    b'{"name": "\xc0\xaf"}',  # overlong "/"
    b'{"name": "\xed\xa0\x80"}',  # an encoded surrogate
    b'{"name": "caf\xe9"}',  # latin-1
    b"\xef\xbb\xbf" + b'{"name": "bom"}',
]
LONE_SURROGATES = ["\\ud800", "\\udfff", "a\\ud83d", "\\udc00\\ud800"]


def _json_targets(template_id: str) -> list[tuple[str, str, str]]:
    """(method, path, body with a NAME placeholder where a string goes)."""
    return [
        ("POST", f"{V1}/templates", '{"name": NAME, "text": "x"}'),
        ("POST", f"{V1}/templates", '{"name": "t", "text": NAME}'),
        ("PUT", f"{V1}/templates/{template_id}", '{"name": "t", "subject": NAME, "text": "x"}'),
        ("POST", f"{V1}/templates/{template_id}/render", '{"variables": {"name": NAME}}'),
        (
            "POST",
            f"{V1}/batches",
            '{"template_id": "TID", "recipients": [{"email": "a@b.co", "variables": '
            '{"name": NAME}}]}'.replace("TID", template_id),
        ),
        (
            "POST",
            f"{V1}/batches",
            '{"template_id": "TID", "recipients": [{"email": NAME}]}'.replace("TID", template_id),
        ),
        (
            "POST",
            f"{V1}/batches",
            '{"template_id": "TID", "recipients": [{"email": "a@b.co", "variables": {"name": '
            '"n"}}], "metadata": {"k": NAME}}'.replace("TID", template_id),
        ),
        ("POST", f"{V1}/admin/keys", '{"name": NAME}'),
        ("POST", f"{V1}/admin/suppressions", '{"email": NAME}'),
        ("POST", f"{V1}/admin/sending/pause", '{"reason": NAME}'),
    ]


async def test_invalid_utf8_and_lone_surrogates(client: ApiClient, admin_key: str) -> None:
    template_id = await create_template(client.http, admin_key)
    problems = []
    for method, path, shape in _json_targets(template_id):
        bodies = [raw.replace(b'{"name": ', b"").replace(b"}", b"") for raw in INVALID_UTF8[:4]]
        candidates = [shape.encode().replace(b"NAME", b) for b in bodies]
        candidates += [shape.replace("NAME", f'"{s}"').encode() for s in LONE_SURROGATES]
        for content in candidates:
            response = await client.http.request(
                method,
                path,
                content=content,
                headers={**auth(admin_key), "Content-Type": "application/json"},
            )
            if not 400 <= response.status_code < 500 or "error" not in response.json():
                problems.append((method, path, content[:80], response.status_code))
    for raw in INVALID_UTF8:
        response = await client.http.post(
            f"{V1}/templates",
            content=raw,
            headers={**auth(admin_key), "Content-Type": "application/json"},
        )
        if not 400 <= response.status_code < 500:
            problems.append(("POST", "templates", raw, response.status_code))
    assert problems == []


SQL = [
    "Robert'); DROP TABLE templates;--",
    "' OR '1'='1",
    '"; DELETE FROM recipients; --',
    "%_\\%\\_",
    "/* */ UNION SELECT key_hash FROM api_keys --",
    "$1 $$ $body$",
    "\\x00\\'",
]


async def test_sql_metacharacters_are_stored_verbatim(client: ApiClient, admin_key: str) -> None:
    for value in SQL:
        created = await client.http.post(
            f"{V1}/templates",
            json={"name": value, "subject": value, "text": "{{v}}", "variables": {}},
            headers=auth(admin_key),
        )
        assert created.status_code == 201, created.text
        template_id = created.json()["id"]
        got = await client.http.get(f"{V1}/templates/{template_id}", headers=auth(admin_key))
        assert got.json()["name"] == value and got.json()["subject"] == value
        rendered = await client.http.post(
            f"{V1}/templates/{template_id}/render",
            json={"variables": {"v": value}},
            headers=auth(admin_key),
        )
        assert rendered.json()["text"] == value
        out = await post_batch(
            client.http,
            admin_key,
            template_id,
            [{"email": "sql@example.com", "variables": {"v": value}}],
            metadata={value: value},
            send_at=far_send_at(),
        )
        assert out.status_code == 201, out.text
        batch = await client.http.get(f"{V1}/batches/{out.json()['id']}", headers=auth(admin_key))
        assert batch.json()["metadata"] == {value: value}
        key = await client.http.post(
            f"{V1}/admin/keys", json={"name": value}, headers=auth(admin_key)
        )
        assert key.status_code == 201 and key.json()["name"] == value
    async with session_scope(client.state.sessionmaker) as session:
        stored = (await session.scalars(select(Recipient.variables))).all()
    assert [v["v"] for v in stored] == SQL
    listed = await client.http.get(
        f"{V1}/templates", params={"limit": 1000}, headers=auth(admin_key)
    )
    assert listed.json()["total"] == len(SQL)


async def test_search_wildcards_are_literal(client: ApiClient, admin_key: str) -> None:
    """`search` is "address contains": % and _ match themselves, not anything."""
    added = await client.http.post(
        f"{V1}/admin/suppressions",
        json={"emails": ["ann@example.com", "bob@example.org", "a_b@example.com"]},
        headers=auth(admin_key),
    )
    assert added.status_code == 201, added.text
    found = {}
    for term in ("%", "_", "a_b", "' OR '1'='1", "example"):
        page = await client.http.get(
            f"{V1}/admin/suppressions", params={"search": term}, headers=auth(admin_key)
        )
        assert page.status_code == 200, page.text
        found[term] = sorted(r["email"] for r in page.json()["data"])
    assert found == {
        "%": [],
        "_": ["a_b@example.com"],
        "a_b": ["a_b@example.com"],
        "' OR '1'='1": [],
        "example": ["a_b@example.com", "ann@example.com", "bob@example.org"],
    }


BIG = 2**70
OUT_OF_RANGE = [
    ("GET", f"{V1}/templates?offset={BIG}", None),
    ("GET", f"{V1}/batches?offset={BIG}", None),
    ("GET", f"{V1}/admin/keys?offset={BIG}", None),
    ("GET", f"{V1}/admin/suppressions?offset={BIG}", None),
    ("GET", f"{V1}/admin/dead-letters?offset={BIG}", None),
    ("GET", f"{V1}/templates?offset=-1", None),
    ("GET", f"{V1}/templates?limit={BIG}", None),
    ("POST", f"{V1}/admin/dead-letters/retry", {"ids": [BIG]}),
    ("POST", f"{V1}/admin/dead-letters/retry", {"ids": [-BIG]}),
]


@pytest.mark.parametrize(("method", "path", "body"), OUT_OF_RANGE)
async def test_out_of_range_numbers_are_422(
    client: ApiClient, admin_key: str, method: str, path: str, body: Any
) -> None:
    """Found by schemathesis: 2**70 as an offset or id reached the database (500 on SQLite,
    503 'service unavailable' on PostgreSQL)."""
    response = await client.http.request(method, path, json=body, headers=auth(admin_key))
    assert_error(response, 422)


async def test_numbers_beyond_64_bits_inside_json_values(client: ApiClient, admin_key: str) -> None:
    """Big integers where JSON is stored as is (variables, metadata, defaults): accepted and
    returned exactly, or refused with a 4xx; never a 5xx."""
    template_id = await create_template(client.http, admin_key)
    bodies = [
        (f"{V1}/templates/{template_id}/render", {"variables": {"name": "n", "code": str(BIG)}}),
        (
            f"{V1}/templates",
            {"name": "n", "text": "{{n}}", "variables": {"n": {"type": "integer", "default": BIG}}},
        ),
    ]
    raw_bodies = [
        (
            f"{V1}/batches",
            '{"template_id": "TID", "recipients": [{"email": "a@b.co", "variables": {"name": '
            '"n"}}], "metadata": {"n": BIG}}'.replace("TID", template_id).replace("BIG", str(BIG)),
        ),
        (
            f"{V1}/batches",
            '{"template_id": "TID", "recipients": [{"email": "a@b.co", "variables": {"name": '
            '"n", "code": BIG}}]}'.replace("TID", template_id).replace("BIG", str(BIG)),
        ),
        (f"{V1}/templates/{template_id}/render", '{"variables": {"name": 1e400}}'),
        (f"{V1}/templates/{template_id}/render", '{"variables": {"name": -1e400}}'),
        (f"{V1}/templates/{template_id}/render", '{"variables": {"name": NaN}}'),
    ]
    statuses = []
    for path, body in bodies:
        response = await client.http.post(path, json=body, headers=auth(admin_key))
        statuses.append((path, response.status_code, response.text[:200]))
    for path, text in raw_bodies:
        response = await client.http.post(
            path, content=text, headers={**auth(admin_key), "Content-Type": "application/json"}
        )
        statuses.append((path, response.status_code, response.text[:200]))
        if response.status_code == 201:
            batch = await client.http.get(
                f"{V1}/batches/{response.json()['id']}", headers=auth(admin_key)
            )
            statuses.append(("GET batch", batch.status_code, batch.text[:200]))
    assert [s for s in statuses if s[1] >= 500] == []


WRONG = [None, True, 0, -1, 1.5, "", "x", [], [None], {}, {"a": None}]


def _valid_bodies(template_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (
            "POST",
            f"{V1}/templates",
            {
                "name": "t",
                "subject": "s",
                "html": "<p>x</p>",
                "text": "x",
                "variables": {"v": {"type": "string", "required": False}},
            },
        ),
        ("PUT", f"{V1}/templates/{template_id}", {"name": "t", "subject": "s", "text": "x"}),
        ("POST", f"{V1}/templates/{template_id}/render", {"variables": {"name": "n"}}),
        (
            "POST",
            f"{V1}/batches",
            {
                "template_id": template_id,
                "recipients": [{"email": "a@b.co", "variables": {"name": "n"}}],
                "metadata": {"m": 1},
                "send_at": far_send_at(),
                "from": "A <a@example.com>",
                "reply_to": "r@example.com",
                "tags": {"t": "v"},
                "unsubscribe": True,
            },
        ),
        ("POST", f"{V1}/admin/keys", {"name": "k", "scopes": ["send"], "admin": False}),
        (
            "POST",
            f"{V1}/admin/suppressions",
            {"email": "s@example.com", "reason": "MANUAL", "note": "n"},
        ),
        ("POST", f"{V1}/admin/dead-letters/retry", {"ids": [1]}),
        ("POST", f"{V1}/admin/sending/pause", {"reason": "r"}),
    ]


async def test_wrong_json_types_everywhere(client: ApiClient, admin_key: str) -> None:
    """Each field of each JSON body, and each body itself, replaced by values of the wrong
    type: always a 4xx in the error format."""
    template_id = await create_template(client.http, admin_key)
    problems = []
    for method, path, valid in _valid_bodies(template_id):
        variants: list[Any] = [None, [], "x", 1, [valid]]
        for field, value in valid.items():
            for wrong in WRONG:
                if type(wrong) is type(value) and wrong == value:
                    continue
                variants.append({**valid, field: wrong})
            if isinstance(value, list) and value and isinstance(value[0], dict):
                for inner in value[0]:
                    for wrong in WRONG:
                        variants.append({**valid, field: [{**value[0], inner: wrong}]})
        for body in variants:
            response = await client.http.request(
                method,
                path,
                content=json.dumps(body).encode(),
                headers={**auth(admin_key), "Content-Type": "application/json"},
            )
            if response.status_code >= 500 or (
                response.status_code >= 400 and set(response.json()) != {"error"}
            ):
                problems.append((method, path, body, response.status_code, response.text[:200]))
    assert problems == []


async def test_nul_in_query_and_path_parameters_is_the_clients_error(
    client: ApiClient, admin_key: str
) -> None:
    """Found by schemathesis: a NUL in a query parameter reached PostgreSQL (which cannot
    store it in text) and came back as 503, as if the database were down."""
    for path, params in (
        ("/api/v1/admin/dead-letters", {"batchId": "O\x00x"}),
        ("/api/v1/batches/O%00x", {}),
        ("/api/v1/admin/suppressions", {"search": "a\x00b"}),
    ):
        response = await client.http.get(path, params=params, headers=auth(admin_key))
        assert_error(response, 422, "invalid_character")
        assert ("path" if not params else "query string") in response.text
