"""`mailer seed` is idempotent (a second run says what exists and creates nothing unless
--force)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.process import HEX64, clean_env, mailer, one_key
from tests.fixtures.client import api_client, auth


async def test_seed_twice_creates_nothing_the_second_time(
    database_url: str, tmp_path: Path, settings_factory: Any
) -> None:
    env = clean_env(DATABASE_URL=database_url)
    first = await mailer("seed", env=env, cwd=tmp_path)
    assert first.code == 0, first.err
    key = one_key(first.out)
    assert "Created the sample template 'Welcome Email'" in first.out

    second = await mailer("seed", env=env, cwd=tmp_path)
    assert second.code == 0, second.err
    assert HEX64.findall(second.out) == []
    assert "The sample template 'Welcome Email' exists already" in second.out
    assert "1 active admin key(s) exist already: no key created" in second.out
    assert "mailer seed --force" in second.out

    forced = await mailer("seed", "--force", env=env, cwd=tmp_path)
    assert forced.code == 0, forced.err
    new_key = one_key(forced.out)
    assert new_key != key
    assert "exists already" in forced.out  # the template is never duplicated

    async with api_client(settings_factory()) as c:
        templates = (await c.http.get("/api/v1/templates", headers=auth(new_key))).json()
        assert [t["name"] for t in templates["data"]] == ["Welcome Email"]
        keys = (await c.http.get("/api/v1/admin/keys", headers=auth(key))).json()
        assert sorted(k["name"] for k in keys["data"]) == ["Seed admin key", "Seed admin key"]
