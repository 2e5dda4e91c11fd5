"""`mailer webhooks …` as a user runs it (subprocess), against a real receiver."""

from __future__ import annotations

import asyncio
import os
import re
import sys

from tests.fixtures.webhook_receiver import Receiver


async def mailer(database_url: str, *args: str, private: bool = True) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILER_", "WEBHOOK_"))}
    env.update(DATABASE_URL=database_url, APP_ENV="test", LOG_LEVEL="warning")
    if private:
        env["WEBHOOK_ALLOW_PRIVATE"] = "true"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailer",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_create_list_test_replay_delete(database_url: str) -> None:
    receiver = await Receiver().start()
    try:
        code, out, err = await mailer(
            database_url, "webhooks", "create", receiver.url, "--event", "email.bounced"
        )
        assert code == 0, err
        endpoint_id = re.search(r"Created endpoint (\w+)\.", out).group(1)  # type: ignore[union-attr]
        secret = re.search(r"(whsec_\S+)", out).group(1)  # type: ignore[union-attr]

        code, out, _ = await mailer(database_url, "webhooks", "list")
        assert endpoint_id in out and "email.bounced" in out and "1 endpoint(s)" in out

        code, out, err = await mailer(database_url, "webhooks", "test", endpoint_id)
        assert code == 0, err
        assert "status 200" in out
        assert receiver.requests[0].verify(secret)["type"] == "webhook.test"

        code, out, err = await mailer(
            database_url, "webhooks", "replay", endpoint_id, "--failed-since", "2026-01-01"
        )
        assert code == 0, err
        assert "Replaying 0" in out
        code, _, err = await mailer(database_url, "webhooks", "replay", endpoint_id)
        assert code == 2 and "--delivery" in err

        code, out, err = await mailer(database_url, "webhooks", "delete", endpoint_id)
        assert code == 0 and "Deleted" in out
        code, _, err = await mailer(database_url, "webhooks", "delete", endpoint_id)
        assert code == 1 and "does not exist" in err
    finally:
        await receiver.stop()


async def test_refusals(database_url: str) -> None:
    code, _, err = await mailer(
        database_url, "webhooks", "create", "http://127.0.0.1:9/x", private=False
    )
    assert code == 1 and "loopback" in err
    code, _, err = await mailer(
        database_url, "webhooks", "create", "http://127.0.0.1:9/x", "--event", "nope"
    )
    assert code == 1 and "events[0]" in err
    code, out, _ = await mailer(database_url, "webhooks", "list")
    assert "0 endpoint(s)" in out
