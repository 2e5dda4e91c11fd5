"""/admin/suppressions over HTTP."""

from __future__ import annotations

from typing import Any

from tests.fixtures.client import auth


async def test_add_list_search_remove(client: Any, admin_key: str) -> None:
    h = auth(admin_key)
    one = await client.http.post(
        "/api/v1/admin/suppressions", json={"email": "A@Example.COM"}, headers=h
    )
    assert one.status_code == 201 and one.json() == {"added": 1, "requested": 1}
    many = await client.http.post(
        "/api/v1/admin/suppressions",
        json={"emails": ["a@example.com", "b@bücher.de", "c@example.org"], "reason": "COMPLAINT"},
        headers=h,
    )
    assert many.json() == {"added": 2, "requested": 3}
    page = (await client.http.get("/api/v1/admin/suppressions", headers=h)).json()
    assert page["total"] == 3
    emails = {row["email"] for row in page["data"]}
    assert emails == {"a@example.com", "b@xn--bcher-kva.de", "c@example.org"}
    reasons = {row["email"]: row["reason"] for row in page["data"]}
    assert reasons["a@example.com"] == "MANUAL"  # the first reason wins
    filtered = (
        await client.http.get(
            "/api/v1/admin/suppressions", params={"reason": "COMPLAINT"}, headers=h
        )
    ).json()
    assert filtered["total"] == 2
    found = (
        await client.http.get(
            "/api/v1/admin/suppressions", params={"search": "example.org"}, headers=h
        )
    ).json()
    assert [r["email"] for r in found["data"]] == ["c@example.org"]
    gone = await client.http.delete("/api/v1/admin/suppressions/A@EXAMPLE.com", headers=h)
    assert gone.status_code == 204
    missing = await client.http.delete("/api/v1/admin/suppressions/a@example.com", headers=h)
    assert missing.status_code == 404


async def test_bad_input(client: Any, admin_key: str, send_key: str) -> None:
    h = auth(admin_key)
    bad = await client.http.post(
        "/api/v1/admin/suppressions", json={"emails": ["ok@example.com", "nope"]}, headers=h
    )
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["index"] == 1
    empty = await client.http.post("/api/v1/admin/suppressions", json={}, headers=h)
    assert empty.status_code == 422
    wrong_reason = await client.http.post(
        "/api/v1/admin/suppressions", json={"email": "x@example.com", "reason": "NOPE"}, headers=h
    )
    assert wrong_reason.status_code == 422
    forbidden = await client.http.get("/api/v1/admin/suppressions", headers=auth(send_key))
    assert forbidden.status_code == 403
    page = (await client.http.get("/api/v1/admin/suppressions", headers=h)).json()
    assert page["total"] == 0
