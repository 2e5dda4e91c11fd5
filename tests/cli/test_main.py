"""The `mailer` command line, run as `python -m mailer` subprocesses against the test
database (SQLite file or PostgreSQL), with the API checked in-process on the same database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from mailer.cli import app as cli_app
from mailer.config import Settings
from mailer.migrate import head_revision
from tests.cli import process
from tests.cli.process import HEX64, Result, clean_env, one_key
from tests.fixtures.client import api_client, auth
from tests.fixtures.database import create_fresh_database, drop_fresh_database


async def mailer(
    *args: str, database_url: str, cwd: Path, env: dict[str, str] | None = None
) -> Result:
    """Run `python -m mailer ARGS` with a clean configuration pointing at database_url
    (plus `env`)."""
    environment = clean_env(DATABASE_URL=database_url, **(env or {}))
    return await process.mailer(*args, env=environment, cwd=cwd, timeout=120)


@pytest.fixture
def fresh_url(tmp_path: Path) -> Iterator[str]:
    url = create_fresh_database(tmp_path)
    yield url
    drop_fresh_database(url)


async def test_migrate_a_fresh_database(
    fresh_url: str, tmp_path: Path, settings_factory: Any
) -> None:
    result = await mailer("migrate", database_url=fresh_url, cwd=tmp_path)
    assert result.code == 0, result.err
    assert f"Database at revision {head_revision()}" in result.out
    async with api_client(settings_factory(database_url=fresh_url)) as c:
        ready = await c.http.get("/api/v1/ready")
        assert ready.status_code == 200, ready.text


async def test_seed_prints_a_working_admin_key_once(
    database_url: str, tmp_path: Path, settings_factory: Any
) -> None:
    result = await mailer("seed", database_url=database_url, cwd=tmp_path)
    assert result.code == 0, result.err
    key = one_key(result.out)
    assert key not in result.err
    async with api_client(settings_factory()) as c:
        templates = await c.http.get("/api/v1/templates", headers=auth(key))
        assert templates.status_code == 200
        [template] = templates.json()["data"]
        assert template["name"] == "Welcome Email"
        assert template["id"] in result.out
        rendered = await c.http.post(
            f"/api/v1/templates/{template['id']}/render",
            json={"variables": {"name": "John"}},
            headers=auth(key),
        )
        assert rendered.json()["html"] == "<h1>Welcome John!</h1>"
        keys = await c.http.get("/api/v1/admin/keys", headers=auth(key))
        assert keys.status_code == 200  # an admin key
        assert key not in keys.text


async def test_keys_create_list_revoke(
    database_url: str, tmp_path: Path, settings_factory: Any
) -> None:
    async def cli(*args: str) -> Result:
        return await mailer(*args, database_url=database_url, cwd=tmp_path)

    admin, sender = await asyncio.gather(
        cli("keys", "create", "Ops admin", "--admin"),
        cli("gen-key", "Production Key"),
    )
    assert admin.code == 0, admin.err
    assert sender.code == 0, sender.err
    admin_key, send_key = one_key(admin.out), one_key(sender.out)
    assert "admin" in admin.out

    # The API's rules for a name (an empty one was stored as '').
    for bad, problem in (("", "at least 1 character"), ("a\tb", "control characters")):
        refused = await cli("keys", "create", bad)
        assert refused.code == 2, refused.err
        assert "Invalid NAME:" in refused.err and problem in refused.err, refused.err
        assert HEX64.findall(refused.out) == []

    listed = await cli("keys", "list")
    assert listed.code == 0, listed.err
    assert HEX64.findall(listed.out) == []
    assert "Ops admin" in listed.out and "Production Key" in listed.out
    assert admin_key[:8] in listed.out and send_key[:8] in listed.out
    assert "2 key(s)" in listed.out

    async with api_client(settings_factory()) as c:
        rows = (await c.http.get("/api/v1/admin/keys", headers=auth(admin_key))).json()["data"]
        by_name = {r["name"]: r for r in rows}
        assert set(by_name["Ops admin"]["scopes"]) == {"admin", "send"}
        assert by_name["Production Key"]["scopes"] == ["send"]
        assert (await c.http.get("/api/v1/templates", headers=auth(send_key))).status_code == 200
        admin_only = await c.http.get("/api/v1/admin/keys", headers=auth(send_key))
        assert admin_only.status_code == 403
        send_id = by_name["Production Key"]["id"]

        revoked, unknown = await asyncio.gather(
            cli("keys", "revoke", send_id),
            cli("keys", "revoke", "01J0000000000000000000NONE"),
        )
        assert revoked.code == 0, revoked.err
        assert send_id in revoked.out
        assert unknown.code == 1
        assert "does not exist" in unknown.err
        # Effective on the very next request of the running API.
        after = await c.http.get("/api/v1/templates", headers=auth(send_key))
        assert after.status_code == 401
        assert (await c.http.get("/api/v1/templates", headers=auth(admin_key))).status_code == 200


async def test_database_trouble_is_a_message_not_a_traceback(
    fresh_url: str, tmp_path: Path
) -> None:
    unmigrated, unreachable = await asyncio.gather(
        mailer("keys", "list", database_url=fresh_url, cwd=tmp_path),
        mailer("keys", "list", database_url="postgresql://u@127.0.0.1:1/x", cwd=tmp_path),
    )
    for result in (unmigrated, unreachable):
        assert result.code == 1, result.err
        assert "Database error" in result.err
        assert "mailer migrate" in result.err
        assert "Traceback" not in result.err
    assert "Connect" in unreachable.err


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group (typer vendors its own click: duck-typed)."""
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*prefix, name))


def test_help_for_every_command() -> None:
    paths = list(command_paths(typer.main.get_command(cli_app)))
    names = {p[0] for p in paths if p}
    assert {"api", "worker", "dev", "migrate", "seed", "gen-key", "keys", "dlq"} <= names
    assert ("keys", "revoke") in paths
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(cli_app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output, path


async def _dead_letter(settings: Settings) -> tuple[str, int]:
    """A COMPLETED batch with one FAILED recipient, and its dead letter."""
    from mailer.db import create_engine, create_sessionmaker, session_scope
    from mailer.models import DeadLetter, Recipient
    from mailer.models.base import utcnow
    from mailer.models.enums import BatchStatus, RecipientStatus
    from tests.metrics.helpers import add_batches

    engine = create_engine(settings, pool_size=1)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            (batch_id,) = await add_batches(session, [BatchStatus.COMPLETED])
            recipient = await session.scalar(
                Recipient.__table__.select()
                .with_only_columns(Recipient.id)
                .where(Recipient.batch_id == batch_id)
            )
            assert recipient is not None
            await session.execute(
                Recipient.__table__.update().values(status=RecipientStatus.FAILED, attempts=3)
            )
            letter = DeadLetter(
                batch_id=batch_id,
                seq_start=0,
                seq_end=1,
                recipient_count=1,
                recipient_ids=[int(recipient)],
                error="boom",
                attempts=3,
                failed_at=utcnow(),
            )
            session.add(letter)
        return batch_id, int(recipient)
    finally:
        await engine.dispose()


async def _recipient_status(settings: Settings, recipient_id: int) -> str:
    from mailer.db import create_engine, create_sessionmaker
    from mailer.models import Recipient

    engine = create_engine(settings, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            recipient = await session.get(Recipient, recipient_id)
            assert recipient is not None
            return str(recipient.status)
    finally:
        await engine.dispose()


@pytest.mark.redis_only
async def test_dlq_retry_enqueues_after_its_commit(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    from mailer.queue.factory import build_queue

    batch_id, recipient_id = await _dead_letter(settings)
    assert settings.redis_url is not None
    result = await mailer(
        "dlq",
        "retry",
        database_url=database_url,
        cwd=tmp_path,
        env={"REDIS_URL": settings.redis_url, "QUEUE_NAME": settings.queue_name},
    )
    assert result.code == 0, result.err
    assert "Retrying 1 recipient(s) from 1 dead letter(s)." in result.out
    assert await _recipient_status(settings, recipient_id) == "RETRYING"
    queue = build_queue(settings)
    try:
        assert await queue.has_pending_for(batch_id)
    finally:
        await queue.close()


async def test_dlq_retry_with_the_queue_down_keeps_the_retry(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """The commit stands when the enqueue after it fails: the reconciler enqueues later."""
    _, recipient_id = await _dead_letter(settings)
    result = await mailer(
        "dlq",
        "retry",
        database_url=database_url,
        cwd=tmp_path,
        env={"REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.code == 0, result.err
    assert "Queue unreachable" in result.err
    assert await _recipient_status(settings, recipient_id) == "RETRYING"
