"""Keys never reach the logs or an error body; they are compared in constant time and the
database never sees one, only its SHA-256."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from mailer.auth import keys as key_material
from tests.faults.harness import ApiProcess, make_key
from tests.fixtures.client import ApiClient
from tests.fixtures.processes import env_for
from tests.security.conftest import KeySet


def hostile_requests(keyset: KeySet) -> list[tuple[str, str, dict[str, Any]]]:
    """Keys presented in every way a client might get wrong, on routes that fail."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for key in keyset.secrets():
        out += [
            ("GET", "/api/v1/templates", {"headers": {"Authorization": f"Bearer {key}"}}),
            ("GET", "/api/v1/templates", {"headers": {"Authorization": f"Bearer {key}x"}}),
            ("GET", "/api/v1/templates", {"headers": {"Authorization": f"Basic {key}"}}),
            ("GET", "/api/v1/templates", {"headers": {"Authorization": key}}),
            ("GET", "/api/v1/templates", {"headers": {"X-Api-Key": key}}),
            ("GET", "/api/v1/templates", {"params": {"api_key": key}}),
            ("GET", "/api/v1/admin/keys", {"headers": {"Authorization": f"Bearer {key}"}}),
            (
                "POST",
                "/api/v1/batches",
                {"headers": {"Authorization": f"Bearer {key}"}, "content": b"{bad json"},
            ),
            (
                "POST",
                "/api/v1/templates",
                {"headers": {"Authorization": f"Bearer {key}"}, "json": {"name": 7}},
            ),
            (
                "POST",
                "/api/v1/batches",
                {
                    "headers": {"Authorization": f"Bearer {key}", "Idempotency-Key": "x" * 300},
                    "json": {},
                },
            ),
        ]
    return out


async def test_keys_never_in_logs_or_error_bodies(settings_factory: Any, tmp_path: Path) -> None:
    """A whole `mailer api` process logging at debug; every byte it wrote is searched."""
    settings = settings_factory(log_level="debug")
    env = env_for(settings, LOG_LEVEL="debug", API_RATE_LIMIT=0)
    admin = await make_key(settings.database_url, admin=True)
    send = await make_key(settings.database_url)
    revoked = await make_key(settings.database_url, admin=True, name="revoked")
    api = ApiProcess(env, tmp_path / "api.log")
    try:
        api.wait_ready()
        async with httpx.AsyncClient(base_url=api.url) as http:
            listed = await http.get(
                "/api/v1/admin/keys", headers={"Authorization": f"Bearer {admin}"}
            )
            revoked_id = next(k["id"] for k in listed.json()["data"] if k["name"] == "revoked")
            await http.post(
                f"/api/v1/admin/keys/{revoked_id}/revoke",
                headers={"Authorization": f"Bearer {admin}"},
            )
            created = await http.post(
                "/api/v1/admin/keys",
                json={"name": "new"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            new_key = created.json()["key"]
            keyset = KeySet(admin, send, revoked, "f" * 64)
            bodies = []
            for method, path, kwargs in hostile_requests(keyset):
                response = await http.request(method, path, **kwargs)
                bodies.append((response.status_code, response.text + repr(response.headers)))
    finally:
        api.terminate()
        api.wait(20)
        api.stop()
    log = api.log()
    assert "request" in log and "api_started" in log  # the log really was written
    for secret in [*keyset.secrets(), new_key]:
        assert secret not in log
        assert all(secret not in text for _, text in bodies)
    assert any(status == 401 for status, _ in bodies)


async def test_comparison_is_on_digests_in_constant_time(
    client: ApiClient, keyset: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an attacker controls (the presented key) is only ever looked up and compared as
    its SHA-256: the database sees the digest, never the key, and the final comparison is
    hmac.compare_digest. So response time cannot reveal a prefix of a stored key."""
    compared: list[tuple[str, str]] = []
    real_compare = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((str(a), str(b)))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        statements.append(f"{statement} {params!r}")

    engine = client.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for key in (keyset.send, keyset.invalid, keyset.send[:-1] + "0"):
            await client.http.get("/api/v1/templates", headers={"Authorization": f"Bearer {key}"})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    digest = hashlib.sha256(keyset.send.encode()).hexdigest()
    assert statements, "no SQL seen"
    for key in (keyset.send, keyset.invalid):
        assert all(key not in s for s in statements)
    assert any(digest in s for s in statements)
    assert (digest, digest) in compared  # the stored hash, compared in constant time
    assert key_material.keys_match(digest, keyset.send)
