"""The overview's workers table through the real app in process: each live worker with the
age of its last heartbeat and its send rate, read from real heartbeat rows."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from mailer.db import session_scope
from mailer.models.base import utcnow
from mailer.models.enums import RecipientStatus
from mailer.worker.heartbeats import SentTally, worker_heartbeat
from tests.fixtures.console import sign_in


class _Sent:
    status = RecipientStatus.SENT


async def test_overview_shows_each_workers_send_rate(client: Any, admin_key: str) -> None:
    tally = SentTally()
    now = utcnow()
    async with session_scope(client.state.sessionmaker) as session:
        await worker_heartbeat(
            session, "host-a:1:<b>x</b>", tally.beat(now - timedelta(seconds=40))
        )
        tally([_Sent()] * 100)
        info = {"transport": "outbox", **tally.beat(now)}
        await worker_heartbeat(session, "host-a:1:<b>x</b>", info)
        await worker_heartbeat(session, "host-b:2", {"transport": "smtp"})
    await sign_in(client, admin_key)
    page = await client.http.get("/console/")
    assert page.status_code == 200
    table = re.search(r'<table id="worker-rates">(.*?)</table>', page.text, re.S)
    assert table is not None, page.text
    rows = re.findall(r"<tr>\s*<td><code>(.*?)</code></td>(.*?)</tr>", table.group(1), re.S)
    by_worker = {
        name: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", rest)).strip() for name, rest in rows
    }
    assert set(by_worker) == {"host-a:1:&lt;b&gt;x&lt;/b&gt;", "host-b:2"}
    a = by_worker["host-a:1:&lt;b&gt;x&lt;/b&gt;"]
    assert a.startswith("outbox") and "100 2.50/s over 40 s" in a, a
    assert by_worker["host-b:2"].endswith("— —")  # no count: a worker of an older version
