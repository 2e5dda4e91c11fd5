"""When a batch counts as finished: its counters gate the check, the recipients decide it."""

from __future__ import annotations

from sqlalchemy import select, update

from mailer.db import session_scope
from mailer.delivery.repository import complete_if_done
from mailer.models import Batch, Recipient
from tests.fixtures.client import ApiClient
from tests.fixtures.pipeline import create_template, make_recipients, post_batch


async def _batch(c: ApiClient, key: str, count: int) -> str:
    template_id = await create_template(c.http, key)
    out = (await post_batch(c.http, key, template_id, make_recipients(count))).json()
    batch_id: str = out["id"]
    return batch_id


async def _status(c: ApiClient, batch_id: str) -> str:
    async with session_scope(c.state.sessionmaker) as session:
        return str(await session.scalar(select(Batch.status).where(Batch.id == batch_id)))


async def _set(c: ApiClient, batch_id: str, *, recipients: str, sent_count: int) -> None:
    async with session_scope(c.state.sessionmaker) as session:
        await session.execute(
            update(Recipient).where(Recipient.batch_id == batch_id).values(status=recipients)
        )
        await session.execute(
            update(Batch).where(Batch.id == batch_id).values(sent_count=sent_count)
        )


async def _complete(c: ApiClient, batch_id: str, *, trust_counters: bool = True) -> bool:
    async with session_scope(c.state.sessionmaker) as session:
        return await complete_if_done(session, batch_id, trust_counters=trust_counters)


async def test_counters_short_of_total_skip_the_scan(client: ApiClient, send_key: str) -> None:
    batch_id = await _batch(client, send_key, 5)
    await _set(client, batch_id, recipients="SENT", sent_count=4)
    assert not await _complete(client, batch_id)
    assert await _status(client, batch_id) == "SENDING"
    # The reconciler's last resort looks at the recipients themselves.
    assert await _complete(client, batch_id, trust_counters=False)
    assert await _status(client, batch_id) == "COMPLETED"


async def test_counters_alone_never_complete_a_batch(client: ApiClient, send_key: str) -> None:
    batch_id = await _batch(client, send_key, 5)
    await _set(client, batch_id, recipients="PENDING", sent_count=5)
    assert not await _complete(client, batch_id)
    assert not await _complete(client, batch_id, trust_counters=False)
    assert await _status(client, batch_id) == "SENDING"
    await _set(client, batch_id, recipients="SENT", sent_count=5)
    assert await _complete(client, batch_id)
    assert await _status(client, batch_id) == "COMPLETED"
