"""The send path's claims are one statement and, on PostgreSQL, one round trip: the claim's
unit of work asks for `single_statement_writes` (no BEGIN/COMMIT; hand-written statements
otherwise run in the session's transaction, tests/db/test_raw_statement_transactions.py),
as delivery/chunk.py does. Counted on the wire
(tests/fixtures/round_trips.py); the claim's guarantees (row locks, SKIP LOCKED, one
worker per recipient) are the statement's own and are tested with the claim itself."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from mailer.db import session_scope
from mailer.db.dialect import single_statement_writes
from mailer.delivery import repository
from mailer.models import Recipient
from tests.fixtures.client import api_client
from tests.fixtures.pipeline import create_template, make_recipients, post_batch
from tests.fixtures.round_trips import counting_proxy

pytestmark = [pytest.mark.postgres_only]


async def test_a_claim_is_one_round_trip_and_claims(
    settings_factory: Any, database_url: str
) -> None:
    async with counting_proxy(database_url, 5432) as db:
        settings = settings_factory(database_url=db.url(database_url))
        async with api_client(settings) as client:
            key = await client.make_key("claims")
            template_id = await create_template(client.http, key)
            response = await post_batch(client.http, key, template_id, make_recipients(5))
            batch_id = response.json()["id"]

            async def claim(limit: int) -> list[repository.Claimed]:
                async with session_scope(client.state.sessionmaker) as session:
                    await single_statement_writes(session)
                    return await repository.claim_chunk(
                        session, batch_id, 0, 100, 300.0, limit=limit, worker="w:1:a"
                    )

            first = await claim(1)  # warm: a connection, the prepared statement
            with db.counting() as count:
                claimed = await claim(3)
            assert count.round_trips == 1, count.round_trips
            assert [r.seq for r in first + claimed] == [0, 1, 2, 3]

            # Committed on its own: another session sees the claims.
            async with client.state.sessionmaker() as session:
                rows = await session.execute(
                    select(Recipient.seq, Recipient.status, Recipient.claimed_by)
                    .where(Recipient.batch_id == batch_id)
                    .order_by(Recipient.seq)
                )
                states = [tuple(r) for r in rows]
    assert states == [
        (0, "SENDING", "w:1:a"),
        (1, "SENDING", "w:1:a"),
        (2, "SENDING", "w:1:a"),
        (3, "SENDING", "w:1:a"),
        (4, "PENDING", None),
    ]
