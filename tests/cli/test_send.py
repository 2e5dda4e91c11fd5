"""`mailer send` as a user runs it (subprocess), while a worker of the test sends: the id
printed, `--wait` to the final status, refusals naming the field."""

from __future__ import annotations

import asyncio
import os
import sys
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from mailer.config import Settings
from tests.fixtures.client import api_client, auth


async def mailer(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(DATABASE_URL=settings.database_url, APP_ENV="test", LOG_LEVEL="warning")
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailer",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_send_and_wait(settings_factory: Any, tmp_path: Path) -> None:
    outbox = tmp_path / "box"
    settings = settings_factory(outbox_dir=outbox, reconcile_interval=0.5)
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key()
        code, out, err = await mailer(
            settings,
            "send",
            "--to",
            "cli@example.com",
            "--subject",
            "Hello {{name}}",
            "--html",
            "<p>Hi {{name}}</p>",
            "--var",
            "name=Ann",
            "--wait",
            "--timeout",
            "60",
        )
        assert code == 0, err
        first, final = out.splitlines()
        message_id, to, status = first.split("\t")
        assert (to, status) == ("cli@example.com", "QUEUED")
        assert final == f"{message_id}\tSENT"
        got = await c.http.get(f"/api/v1/emails/{message_id}", headers=auth(key))
        assert got.json()["status"] == "SENT"
    [eml] = list(outbox.glob("*.eml"))
    message = message_from_bytes(eml.read_bytes(), policy=default_policy)
    assert message["Subject"] == "Hello Ann"
    assert message["To"] == "cli@example.com"


async def test_refusals_name_the_field(settings_factory: Any) -> None:
    settings = settings_factory()
    async with api_client(settings):
        code, _, err = await mailer(
            settings, "send", "--to", "nobody", "--subject", "s", "--text", "t"
        )
        assert code == 2 and "to[0]: invalid address" in err
        code, _, err = await mailer(
            settings, "send", "--to", "a@example.com", "--subject", "s", "--html", "<p>{{x}}"
        )
        assert code == 2 and "variables.x: is missing" in err
        code, _, err = await mailer(settings, "send", "--to", "a@example.com", "--text", "t")
        assert code == 2 and "subject: required" in err
        code, _, err = await mailer(settings, "send", "--to", "a@example.com", "--var", "novalue")
        assert code == 2 and "--var" in err
