"""One convention across the API: request bodies in snake_case (camelCase accepted, both
spellings refused), the OpenAPI document agreeing with what the server accepts, query
parameters checked, `Allow` naming every method, timestamps in UTC with a Z, event type
filters by status name, one counts shape."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from mailer.db import session_scope
from mailer.deps import ApiRoute
from mailer.events import record_events
from mailer.models.enums import RecipientStatus
from mailer.routes import api_routes
from mailer.suppressions import service as suppressions
from tests.fixtures.client import ApiClient, auth
from tests.fixtures.console import sign_in
from tests.fixtures.pipeline import create_template, make_recipients, post_batch

API = "/api/v1"
# Endpoints others call by a URL they were given (SNS, a mail client): not JSON, and
# not held to the query parameter rules.
EXEMPT = (f"{API}/webhooks/", f"{API}/unsubscribe/")
CAMEL = re.compile(r"[a-z][A-Z]")


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    for variant in schema.get("anyOf", []):
        if variant.get("type") != "null":
            return _resolve(spec, variant)
    return schema


def _request_bodies(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, resolved schema) of every JSON request body."""
    out = []
    for path, item in spec["paths"].items():
        if path.startswith(EXEMPT):
            continue
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                schema = _resolve(spec, content["application/json"]["schema"])
                out.append((method, path, schema))
    return out


def _fill(path: str) -> str:
    return re.sub(r"{[^}]+}", "nosuchid", path)


def _refused_as_unknown(response: Any, name: str) -> bool:
    if response.status_code != 422:
        return False
    for detail in response.json()["error"]["details"]:
        field = str(detail.get("field", ""))
        unknown = detail.get("type") == "extra_forbidden" or "unknown" in detail["message"]
        if unknown and field.rsplit(".", 1)[-1].split("[")[0] == name:
            return True
    return False


async def _openapi(client: ApiClient) -> dict[str, Any]:
    response = await client.http.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


async def test_openapi_request_schemas_match_what_the_server_accepts(
    client: ApiClient, admin_key: str
) -> None:
    spec = await _openapi(client)
    bodies = _request_bodies(spec)
    assert {(m, p) for m, p, _ in bodies} >= {
        ("post", f"{API}/batches"),
        ("post", f"{API}/templates"),
        ("put", f"{API}/templates/{{template_id}}"),
        ("post", f"{API}/admin/keys"),
        ("post", f"{API}/admin/suppressions"),
    }
    checked = 0
    for method, path, schema in bodies:
        properties = schema.get("properties", {})
        assert schema.get("additionalProperties") is False, (method, path)
        url = _fill(path)
        for name in properties:
            # documented: snake_case, and accepted (maybe refused for its value, never as
            # an unknown field); its camelCase spelling is accepted too
            assert not CAMEL.search(name), (path, name)
            for spelling in {name, re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)}:
                response = await client.http.request(
                    method, url, json={spelling: None}, headers=auth(admin_key)
                )
                assert not _refused_as_unknown(response, spelling), (path, spelling, response.text)
                checked += 1
        response = await client.http.request(
            method, url, json={"not_documented": 1}, headers=auth(admin_key)
        )
        assert _refused_as_unknown(response, "not_documented"), (path, response.text)
    assert checked > 20


async def test_batch_recipient_schema_matches_the_server(client: ApiClient, send_key: str) -> None:
    spec = await _openapi(client)
    recipient = spec["components"]["schemas"]["RecipientIn"]
    assert set(recipient["properties"]) == {"email", "variables"}
    template_id = await create_template(client.http, send_key)
    ok = await post_batch(
        client.http, send_key, template_id, [{"email": "a@example.com", "variables": {"name": "A"}}]
    )
    assert ok.status_code == 201, ok.text
    bad = await post_batch(
        client.http, send_key, template_id, [{"email": "a@example.com", "not_documented": 1}]
    )
    assert _refused_as_unknown(bad, "not_documented"), bad.text


async def test_both_spellings_of_one_field_are_refused_naming_both(
    client: ApiClient, send_key: str
) -> None:
    template_id = await create_template(client.http, send_key)
    body = {
        "template_id": template_id,
        "templateId": template_id,
        "recipients": make_recipients(1),
    }
    response = await client.http.post(f"{API}/batches", json=body, headers=auth(send_key))
    assert response.status_code == 422
    (detail,) = response.json()["error"]["details"]
    assert detail["fields"] == ["template_id", "templateId"]
    assert "template_id" in detail["message"] and "templateId" in detail["message"]


async def test_errors_name_fields_as_sent(client: ApiClient, send_key: str) -> None:
    missing = await client.http.post(
        f"{API}/batches", json={"recipients": make_recipients(1)}, headers=auth(send_key)
    )
    assert missing.status_code == 422
    assert [d["field"] for d in missing.json()["error"]["details"]] == ["template_id"]
    template_id = await create_template(client.http, send_key)
    for spelling in ("send_at", "sendAt"):
        response = await post_batch(
            client.http, send_key, template_id, make_recipients(1), **{spelling: "tomorrow"}
        )
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == spelling
    for spelling in ("reply_to", "replyTo"):
        response = await post_batch(
            client.http, send_key, template_id, make_recipients(1), **{spelling: ["nope"]}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["field"] == f"{spelling}[0]"


async def test_a_field_of_several_shapes_is_named_as_sent(client: ApiClient, send_key: str) -> None:
    """`to` and `reply_to` take an address or a list of them: a wrong value was reported
    as `to.constrained-str` and `to.list[constrained-str]`, Pydantic's names for the two."""
    template_id = await create_template(client.http, send_key)
    email = {"subject": "s", "text": "t"}
    cases: list[tuple[str, dict[str, Any], set[str]]] = [
        ("/emails", {**email, "to": 5}, {"to"}),
        ("/emails", {**email, "to": "a@example.com", "replyTo": {"x": 1}}, {"replyTo"}),
        ("/emails", {**email, "to": ["a@example.com", 5]}, {"to[1]"}),
        ("/emails", {**email, "to": None}, {"to"}),
        (
            "/batches",
            {"template_id": template_id, "recipients": make_recipients(1), "reply_to": 5},
            {"reply_to"},
        ),
        (
            "/batches",
            {"templateId": template_id, "recipients": make_recipients(1), "replyTo": [5]},
            {"replyTo[0]"},
        ),
    ]
    for path, body, fields in cases:
        response = await client.http.post(f"{API}{path}", json=body, headers=auth(send_key))
        assert response.status_code == 422, (body, response.text)
        details = response.json()["error"]["details"]
        assert {d["field"] for d in details} == fields, (body, details)
        assert len(details) == len(fields), details  # one detail per field


async def test_unknown_query_parameters_are_refused_everywhere(
    client: ApiClient, admin_key: str
) -> None:
    spec = await _openapi(client)
    tried = 0
    for path, item in spec["paths"].items():
        if path.startswith(EXEMPT) or "get" not in item:
            continue
        response = await client.http.get(
            _fill(path), params={"not_a_parameter": "1"}, headers=auth(admin_key)
        )
        assert response.status_code == 422, (path, response.text)
        fields = [d["field"] for d in response.json()["error"]["details"]]
        assert fields == ["query:not_a_parameter"], path
        tried += 1
    assert tried >= 10


async def test_every_api_route_applies_the_query_rules(client: ApiClient) -> None:
    # A router created without route_class=ApiRoute would silently ignore unknown
    # parameters (POST routes are not covered by the GET loop above).
    routes = list(api_routes(client.app))
    assert len(routes) > 30
    unchecked = [
        path
        for path, route in routes
        if not isinstance(route, ApiRoute) and not path.startswith(EXEMPT)
    ]
    assert unchecked == []


async def test_query_parameters_snake_case_with_camel_case_accepted(
    client: ApiClient, admin_key: str
) -> None:
    spec = await _openapi(client)
    names = [
        p["name"]
        for item in spec["paths"].values()
        for op in item.values()
        for p in op.get("parameters", [])
        if p["in"] == "query"
    ]
    assert names and not [n for n in names if CAMEL.search(n)]
    url = f"{API}/admin/dead-letters"
    for params in ({"batch_id": "b1"}, {"batchId": "b1"}):
        response = await client.http.get(url, params=params, headers=auth(admin_key))
        assert response.status_code == 200, response.text
    both = await client.http.get(
        url, params={"batch_id": "b1", "batchId": "b1"}, headers=auth(admin_key)
    )
    assert both.status_code == 422
    assert both.json()["error"]["details"][0]["fields"] == ["query:batch_id", "query:batchId"]


async def test_allow_lists_every_method_of_the_path(client: ApiClient, send_key: str) -> None:
    response = await client.http.delete(f"{API}/batches", headers=auth(send_key))
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
    spec = await _openapi(client)
    for path, item in spec["paths"].items():
        documented = {m.upper() for m in item}
        unused = next(m for m in ("PATCH", "PUT", "DELETE", "POST") if m not in documented)
        response = await client.http.request(unused, _fill(path), headers=auth(send_key))
        assert response.status_code == 405, (path, unused)
        assert set(response.headers["allow"].split(", ")) == documented, path


async def test_timestamps_are_utc_with_z(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    at = (datetime.now(UTC) + timedelta(days=30)).replace(minute=0, second=0, microsecond=0)
    send_at = at.astimezone(timezone(timedelta(hours=2)))
    created = await post_batch(
        client.http, send_key, template_id, make_recipients(1), send_at=send_at.isoformat()
    )
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["sendAt"] == at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert out["createdAt"].endswith("Z")
    got = (await client.http.get(f"{API}/batches/{out['id']}", headers=auth(send_key))).json()
    assert got["sendAt"] == out["sendAt"]
    for name in ("createdAt",):
        assert got[name].endswith("Z")


async def test_console_live_status_timestamps_end_with_z(client: ApiClient, admin_key: str) -> None:
    template_id = await create_template(client.http, admin_key)
    async with session_scope(client.state.sessionmaker) as session:
        await suppressions.add(session, ["user0@example.com"], "MANUAL")
    out = (await post_batch(client.http, admin_key, template_id, make_recipients(1))).json()
    assert out["status"] == "COMPLETED"  # every recipient suppressed: finished at once
    await sign_in(client, admin_key)
    live = (await client.http.get(f"/console/batches/{out['id']}/live.json")).json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", live["completedAt"]), live


async def test_event_type_filter_takes_status_names(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    out = (await post_batch(client.http, send_key, template_id, make_recipients(2))).json()
    async with session_scope(client.state.sessionmaker) as session:
        await record_events(
            session,
            [
                {"batch_id": out["id"], "email": "user0@example.com", "type": kind, "data": {}}
                for kind in ("BOUNCE", "DELIVERY", "COMPLAINT")
            ],
        )
    url = f"{API}/batches/{out['id']}/events"
    for status, event in [
        ("BOUNCED", "BOUNCE"),
        ("BOUNCE", "BOUNCE"),
        ("DELIVERED", "DELIVERY"),
        ("COMPLAINED", "COMPLAINT"),
        ("PENDING", "QUEUED"),
    ]:
        page = await client.http.get(url, params={"type": status}, headers=auth(send_key))
        assert page.status_code == 200, page.text
        assert [e["type"] for e in page.json()["data"]] == [event], status
    bad = await client.http.get(url, params={"type": "BOUNCEDD"}, headers=auth(send_key))
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "query:type"


async def test_batch_and_summary_counts_have_one_shape(client: ApiClient, send_key: str) -> None:
    template_id = await create_template(client.http, send_key)
    async with session_scope(client.state.sessionmaker) as session:
        await suppressions.add(session, ["user0@example.com", "user1@example.com"], "MANUAL")
    out = (await post_batch(client.http, send_key, template_id, make_recipients(2))).json()
    batch = (await client.http.get(f"{API}/batches/{out['id']}", headers=auth(send_key))).json()
    summary = (
        await client.http.get(f"{API}/batches/{out['id']}/summary", headers=auth(send_key))
    ).json()
    every = {s.value for s in RecipientStatus}
    assert set(batch["counts"]) == set(summary["counts"]) == every
    assert batch["counts"] == summary["counts"]
    assert batch["counts"]["SUPPRESSED"] == 2 and batch["total"] == summary["total"] == 2
    # every recipient suppressed: COMPLETED, and the result says nothing went out
    assert batch["status"] == summary["status"] == "COMPLETED"
    assert batch["result"] == summary["result"] == "none_sent"
    listed = (await client.http.get(f"{API}/batches", headers=auth(send_key))).json()
    assert listed["data"][0]["counts"] == batch["counts"]


DOCS = [Path(__file__).resolve().parents[1] / name for name in ("README.md", "docs/production.md")]
# curl ... -X POST "<base>/api/v1/PATH" ... -d '<json>' in the documentation's examples
CURL_POST = re.compile(
    r"curl [^\n]*-X POST \"?(?:\$URL|https?://[^/\s\"]+)(/api/v1/[a-z/-]+)\"?.*?"
    r"-d ((?:'[^']*'|\"[^\"]*\")+)",
    re.S,
)


def _keys(value: Any, schema: dict[str, Any], spec: dict[str, Any], where: str) -> list[str]:
    """Keys of `value` the schema does not document (recursively, through arrays)."""
    schema = _resolve(spec, schema)
    if isinstance(value, list):
        items = schema.get("items")
        return [k for v in value for k in _keys(v, items or {}, spec, where + "[]")]
    if not isinstance(value, dict) or "properties" not in schema:
        return []
    out = []
    for key, inner in value.items():
        if key not in schema["properties"]:
            out.append(f"{where}.{key}")
        else:
            out.extend(_keys(inner, schema["properties"][key], spec, f"{where}.{key}"))
    return out


async def test_the_documentation_uses_the_documented_field_names(client: ApiClient) -> None:
    """README and docs examples, the README's field lists and the OpenAPI document name the
    same request fields."""
    spec = await _openapi(client)

    def body_schema(path: str) -> dict[str, Any]:
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        return _resolve(spec, content["application/json"]["schema"])

    examples = 0
    for doc in DOCS:
        for path, raw in CURL_POST.findall(doc.read_text()):
            # the shell word: '...' pieces as written, "$VARIABLE" pieces as a value
            pieces = re.findall(r"'([^']*)'|\"[^\"]*\"", raw)
            body = json.loads("".join(piece or "x" for piece in pieces))
            unknown = _keys(body, body_schema(path), spec, path)
            assert unknown == [], (doc.name, unknown)
            examples += 1
    assert examples >= 4

    readme = DOCS[0].read_text()
    row = re.search(r"\| `POST /batches` \| send: `\{(.*?)\}`", readme)
    assert row is not None
    listed = re.sub(r"\[\{.*?\}\]", "", row.group(1))
    names = {part.split(":")[0].strip(" ?") for part in listed.split(",")}
    assert names == set(body_schema(f"{API}/batches")["properties"])
    templates = re.search(r"`POST /api/v1/templates` with `\{(.*?)\}`", readme, re.S)
    assert templates is not None
    names = {n.strip(' "\n') for n in templates.group(1).split(",")}
    assert names == set(body_schema(f"{API}/templates")["properties"])
