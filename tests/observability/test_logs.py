"""Logs: JSON lines carrying request/batch/job/recipient ids, and never a key, a secret,
a message body or a variable's value."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.client import api_client
from tests.fixtures.pipeline import create_template, post_batch, wait_batch
from tests.fixtures.smtp_server import SmtpTestServer

MARKER = "Zq7-secret-variable-value"


async def test_full_send_logs_ids_and_no_secrets(
    settings_factory: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    with SmtpTestServer(
        rcpt_policy={"bad@example.com": 550}, auth={"smtpuser": "smtp-Pa55-word"}
    ) as server:
        settings = settings_factory(
            mail_transport="smtp",
            smtp_url=server.url(user="smtpuser", password="smtp-Pa55-word"),
            log_level="info",
            log_format="json",
        )
        async with api_client(settings, embedded_worker=True) as c:
            key = await c.make_key(admin=True)
            template_id = await create_template(c.http, key)
            recipients = [
                {"email": "good@example.com", "variables": {"name": MARKER}},
                {"email": "bad@example.com", "variables": {"name": MARKER}},
            ]
            out = (await post_batch(c.http, key, template_id, recipients)).json()
            await wait_batch(c.http, key, out["id"])
            bad = await c.http.get("/api/v1/batches", headers={"Authorization": f"Bearer {key}x"})
            assert bad.status_code == 401
    captured = capfd.readouterr()
    text = captured.out + captured.err
    assert MARKER not in text
    assert key not in text
    assert "smtp-Pa55-word" not in text
    assert settings.unsubscribe_key.decode() not in text
    assert "Welcome" not in text  # no rendered subject or body

    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines, text[:2000]
    requests = [entry for entry in lines if entry.get("event") == "request"]
    assert requests
    assert all(entry.get("request_id") for entry in requests)
    assert all("duration_ms" in entry and "status" in entry for entry in requests)
    failed = [entry for entry in lines if entry.get("event") == "send_failed"]
    assert failed
    assert failed[0]["recipient_id"]
    assert failed[0]["batch_id"] == out["id"]
    assert failed[0]["job_id"].startswith(out["id"])
    completed = [entry for entry in lines if entry.get("event") == "batch_completed"]
    assert completed[0]["batch_id"] == out["id"]
