"""Authentication and scopes on every route, key storage, revocation, usage tracking, and
the /admin/keys API (the Node service's documented examples)."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, routing
from sqlalchemy import event, select

from mailer.models import ApiKey
from tests.fixtures.client import auth
from tests.fixtures.errors import assert_error

PREFIX = "/api/v1"
KEYS = f"{PREFIX}/admin/keys"
# Routes that need the admin scope: the /admin API and the outbound webhook endpoints.
ADMIN_ONLY = (f"{PREFIX}/admin/", f"{PREFIX}/webhook-endpoints")
TEMPLATES = f"{PREFIX}/templates"
# Routes without API key auth: probes, docs, public metrics, SNS and unsubscribe links, and
# `/` (a redirect to the console, which signs in with a key of its own: tests/console).
PUBLIC = (f"{PREFIX}/health", f"{PREFIX}/ready", f"{PREFIX}/metrics", "/metrics", "/")
PUBLIC_PREFIXES = (
    "/openapi.json",
    "/docs",
    "/redoc",
    f"{PREFIX}/webhooks",
    f"{PREFIX}/unsubscribe",
)
# Fills every path parameter. No dot and no "@": a {domain} or {email} is rejected before
# any lookup, so the matrix never reaches DNS or another network service.
FAKE_ID = "01J0000000000000000000FAKE"
HEX64 = re.compile(r"[0-9a-f]{64}")


def api_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app registers, path params filled with fake ids."""
    contexts: Any = routing.iter_route_contexts(app.routes)
    for route in contexts:
        path, methods = route.path, route.methods
        if not path or not methods:
            continue
        if path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            continue
        concrete = re.sub(r"\{[^}]+\}", FAKE_ID, path)
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            yield method, concrete


async def call(client: Any, method: str, path: str, key: str | None) -> Any:
    headers = auth(key) if key is not None else {}
    if method in ("POST", "PUT", "PATCH"):
        return await client.http.request(method, path, headers=headers, json={})
    return await client.http.request(method, path, headers=headers)


async def revoked_key(client: Any) -> str:
    key: str = await client.make_key("to-revoke")
    admin = await client.make_key("revoker", admin=True)
    rows = (await client.http.get(KEYS, headers=auth(admin))).json()["data"]
    key_id = next(r["id"] for r in rows if r["name"] == "to-revoke")
    response = await client.http.post(f"{KEYS}/{key_id}/revoke", headers=auth(admin))
    assert response.status_code == 200, response.text
    return key


async def test_every_route_enforces_keys_and_scopes(
    client: Any, send_key: str, admin_key: str
) -> None:
    routes = sorted(set(api_routes(client.app)))
    paths = {p for _, p in routes}
    # The matrix really covers the app (guards against the route walk silently finding nothing).
    assert {KEYS, TEMPLATES, f"{TEMPLATES}/{FAKE_ID}/render", f"{PREFIX}/batches"} <= paths
    revoked = await revoked_key(client)
    unknown = secrets.token_hex(32)
    secrets_used = (send_key, admin_key, revoked, unknown)
    for method, path in routes:
        where = f"{method} {path}"
        for key in (None, unknown, revoked):
            response = await call(client, method, path, key)
            assert response.status_code == 401, (where, key, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer"), where
            assert_error(response, 401, "unauthorized")
        as_send = await call(client, method, path, send_key)
        if path.startswith(ADMIN_ONLY):
            assert_error(as_send, 403, "insufficient_scope")
        else:
            assert as_send.status_code not in (401, 403), (where, as_send.text)
        as_admin = await call(client, method, path, admin_key)
        assert as_admin.status_code not in (401, 403), (where, as_admin.text)
        for response in (as_send, as_admin):
            assert response.status_code < 500, (where, response.text)
            for secret in secrets_used:
                assert secret not in response.text, where


async def test_revocation_is_effective_on_the_next_request(client: Any, admin_key: str) -> None:
    created = await client.http.post(KEYS, json={"name": "short-lived"}, headers=auth(admin_key))
    key, key_id = created.json()["key"], created.json()["id"]
    assert (await client.http.get(TEMPLATES, headers=auth(key))).status_code == 200
    revoked = await client.http.post(f"{KEYS}/{key_id}/revoke", headers=auth(admin_key))
    assert revoked.status_code == 200
    assert revoked.json()["revokedAt"] is not None
    assert key not in revoked.text
    assert_error(await client.http.get(TEMPLATES, headers=auth(key)), 401, "unauthorized")
    # Revoking again is harmless and keeps the first revocation time.
    again = await client.http.post(f"{KEYS}/{key_id}/revoke", headers=auth(admin_key))
    assert again.status_code == 200
    assert again.json()["revokedAt"] == revoked.json()["revokedAt"]


async def test_revoking_an_unknown_key_is_404(client: Any, admin_key: str) -> None:
    response = await client.http.post(f"{KEYS}/{FAKE_ID}/revoke", headers=auth(admin_key))
    assert_error(response, 404, "not_found")


async def test_usage_is_tracked_in_memory_and_flushed(client: Any) -> None:
    # Stop the periodic flush so only the explicit flush below writes (still records).
    await client.state.usage.stop()
    key = await client.make_key("tracked")
    statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.lower())

    engine = client.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        for _ in range(3):
            assert (await client.http.get(TEMPLATES, headers=auth(key))).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert statements, "the requests should have read the database"
    assert not [s for s in statements if "update api_keys" in s or "insert into api_keys" in s]

    async with client.state.sessionmaker() as session:
        row = (await session.scalars(select(ApiKey).where(ApiKey.name == "tracked"))).one()
        assert (row.usage_count, row.last_used_at) == (0, None)

    await client.state.usage.flush()
    async with client.state.sessionmaker() as session:
        row = (await session.scalars(select(ApiKey).where(ApiKey.name == "tracked"))).one()
        assert row.usage_count == 3
        assert row.last_used_at is not None

    admin = await client.make_key("looker", admin=True)
    listed = (await client.http.get(KEYS, headers=auth(admin))).json()["data"]
    tracked = next(r for r in listed if r["name"] == "tracked")
    assert tracked["usageCount"] == 3
    assert tracked["lastUsedAt"] is not None
    unused = next(r for r in listed if r["name"] == "looker")
    assert (unused["usageCount"], unused["lastUsedAt"]) == (0, None)


async def test_keys_are_64_hex_and_stored_only_as_sha256(client: Any, admin_key: str) -> None:
    response = await client.http.post(KEYS, json={"name": "stored"}, headers=auth(admin_key))
    key = response.json()["key"]
    assert HEX64.fullmatch(key)
    async with client.state.sessionmaker() as session:
        row = await session.get(ApiKey, response.json()["id"])
        assert row is not None
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        columns = {c.key: getattr(row, c.key) for c in ApiKey.__table__.columns}
    for name, value in columns.items():
        assert key not in str(value), f"plaintext key in column {name}"
    # The helper used by other tests produces the same kind of key.
    assert HEX64.fullmatch(await client.make_key())


# --------------------------------------------------------------------------- /admin/keys


async def test_create_key_as_in_original_spec(client: Any, admin_key: str) -> None:
    response = await client.http.post(KEYS, json={"name": "Mobile App"}, headers=auth(admin_key))
    assert response.status_code == 201, response.text
    body = response.json()
    assert {"id", "key", "name", "createdAt"} <= set(body)
    assert body["name"] == "Mobile App"
    assert HEX64.fullmatch(body["key"])
    assert body["scopes"] == ["send"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", body["createdAt"])
    # The new key works for sending routes, not admin ones.
    assert (await client.http.get(TEMPLATES, headers=auth(body["key"]))).status_code == 200
    assert_error(await client.http.get(KEYS, headers=auth(body["key"])), 403)
    # Shown once: the list has the key's id and prefix, never the key.
    listed = await client.http.get(KEYS, headers=auth(admin_key))
    assert body["key"] not in listed.text
    row = next(r for r in listed.json()["data"] if r["id"] == body["id"])
    assert "key" not in row and "keyHash" not in row
    assert row["prefix"] == body["key"][:8]
    assert row["revokedAt"] is None


@pytest.mark.parametrize("body", [{"name": "x", "admin": True}, {"name": "x", "scopes": ["admin"]}])
async def test_create_admin_key(client: Any, admin_key: str, body: dict[str, Any]) -> None:
    response = await client.http.post(KEYS, json=body, headers=auth(admin_key))
    assert response.status_code == 201, response.text
    assert set(response.json()["scopes"]) == {"admin", "send"}
    new_key = response.json()["key"]
    assert (await client.http.get(KEYS, headers=auth(new_key))).status_code == 200


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": 3}, {"name": "a\nb"}, {"name": "x", "scopes": ["root"]}]
)
async def test_create_key_rejects_bad_bodies(
    client: Any, admin_key: str, body: dict[str, Any]
) -> None:
    response = await client.http.post(KEYS, json=body, headers=auth(admin_key))
    error = assert_error(response, 422, "validation_error")
    assert error["details"]


async def test_list_keys_paginates(client: Any, admin_key: str) -> None:
    for i in range(4):
        await client.make_key(f"k{i}")
    first = (await client.http.get(KEYS, params={"limit": 2}, headers=auth(admin_key))).json()
    assert (first["total"], first["limit"], first["offset"], len(first["data"])) == (5, 2, 0, 2)
    rest = await client.http.get(KEYS, params={"limit": 2, "offset": 2}, headers=auth(admin_key))
    second = rest.json()
    assert (second["offset"], len(second["data"])) == (2, 2)
    tail = await client.http.get(KEYS, params={"offset": 4}, headers=auth(admin_key))
    assert len(tail.json()["data"]) == 1
    ids = [r["id"] for r in first["data"] + second["data"] + tail.json()["data"]]
    assert len(set(ids)) == 5
    for params in ({"limit": 1001}, {"limit": 0}, {"offset": -1}):
        bad = await client.http.get(KEYS, params=params, headers=auth(admin_key))
        assert_error(bad, 422, "validation_error")


async def test_keys_never_reach_the_logs(
    settings_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fixtures.client import api_client

    async with api_client(settings_factory(log_level="debug")) as c:
        admin = await c.make_key("admin", admin=True)
        created = await c.http.post(KEYS, json={"name": "new"}, headers=auth(admin))
        new_key = created.json()["key"]
        odd_key = "not-hex-but-secret-Zq9"
        for key in (admin, new_key, odd_key, secrets.token_hex(32)):
            await c.http.get(TEMPLATES, headers=auth(key))
            await c.http.post(TEMPLATES, json={"bad": 1}, headers=auth(key))
        await c.state.usage.flush()
    logs = capsys.readouterr()
    output = logs.out + logs.err
    # The access log was captured, so the check below looked at real log lines.
    assert '"event": "request"' in output and '"path": "/api/v1/templates"' in output
    for key in (admin, new_key, odd_key):
        assert key not in output
