"""Claims depend on their worker's liveness: a dead worker's claims (heartbeat older than
WORKER_DEAD_AFTER) are taken by the claim path and released by the reconciler at once; a
live worker keeps its claims however old; only claims naming no worker use CLAIM_LEASE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.db import session_scope
from mailer.delivery import repository
from mailer.delivery.liveness import Liveness, new_worker_id, worker_key
from mailer.models import Recipient, SystemState
from mailer.queue.factory import build_queue
from mailer.worker.heartbeats import worker_heartbeat
from mailer.worker.reconciler import Reconciler
from tests.fixtures.client import ApiClient
from tests.fixtures.pipeline import create_template, make_recipients, post_batch

DEAD_AFTER = 3.0
DEAD = "dead-host:1:aaaaaa"
LIVE = "live-host:2:bbbbbb"


@asynccontextmanager
async def judging_liveness(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Liveness]:
    """This worker, heartbeating long enough (WORKER_DEAD_AFTER without a gap) to judge."""
    liveness = Liveness(sessionmaker, new_worker_id(), DEAD_AFTER)
    task = asyncio.create_task(liveness.run())
    try:
        async with asyncio.timeout(4 * DEAD_AFTER):
            while not liveness.judging():
                await asyncio.sleep(0.05)
        yield liveness
    finally:
        task.cancel()


async def _claims(client: ApiClient, send_key: str) -> str:
    """A batch of four: seq 0 claimed just now by a dead worker, seq 1 claimed an hour ago
    by a live one, seq 2 claimed an hour ago by no worker (an old claim), seq 3 PENDING."""
    template_id = await create_template(client.http, send_key)
    batch = (await post_batch(client.http, send_key, template_id, make_recipients(4))).json()
    now = datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    async with session_scope(client.state.sessionmaker) as session:
        await worker_heartbeat(session, DEAD, {})
        await session.execute(
            update(SystemState)
            .where(SystemState.key == worker_key(DEAD))
            .values(updated_at=now - timedelta(seconds=DEAD_AFTER + 60))
        )
        await worker_heartbeat(session, LIVE, {})
        for seq, by, at in ((0, worker_key(DEAD), now), (1, worker_key(LIVE), hour_ago)):
            await session.execute(
                update(Recipient)
                .where(Recipient.batch_id == batch["id"], Recipient.seq == seq)
                .values(status="SENDING", claimed_by=by, claimed_at=at)
            )
        await session.execute(
            update(Recipient)
            .where(Recipient.batch_id == batch["id"], Recipient.seq == 2)
            .values(status="SENDING", claimed_by=None, claimed_at=hour_ago)
        )
    batch_id: str = batch["id"]
    return batch_id


async def _states(client: ApiClient, batch_id: str) -> dict[int, tuple[str, str | None]]:
    async with session_scope(client.state.sessionmaker) as session:
        rows = await session.execute(
            select(Recipient.seq, Recipient.status, Recipient.claimed_by).where(
                Recipient.batch_id == batch_id
            )
        )
        return {int(seq): (str(status), by) for seq, status, by in rows.tuples()}


async def _claim_chunk(
    session: AsyncSession,
    client: ApiClient,
    batch_id: str,
    liveness: Liveness,
    dead_before: datetime | None,
) -> list[repository.Claimed]:
    """The whole chunk (seq 0 to 3), claimed as the worker of `liveness`."""
    return await repository.claim_chunk(
        session,
        batch_id,
        0,
        4,
        client.state.settings.claim_lease,
        limit=10,
        worker=liveness.key,
        dead_before=dead_before,
    )


async def test_reconciler_releases_a_dead_workers_claims_only(
    client: ApiClient, send_key: str
) -> None:
    batch_id = await _claims(client, send_key)
    settings = client.state.settings.model_copy(update={"worker_dead_after": DEAD_AFTER})
    queue = build_queue(settings)
    try:
        async with judging_liveness(client.state.sessionmaker) as liveness:
            async with session_scope(client.state.sessionmaker) as session:
                await worker_heartbeat(session, LIVE, {})  # the live worker beats on
            reconciler = Reconciler(settings, client.state.sessionmaker, queue, liveness)
            report = await reconciler.run_once()
    finally:
        await queue.close()
    assert report.claims_expired == 2
    states = await _states(client, batch_id)
    assert states[0] == ("RETRYING", None)  # its worker is dead, however fresh the claim
    assert states[1] == ("SENDING", worker_key(LIVE))  # alive: kept, however old
    assert states[2] == ("RETRYING", None)  # names no worker: the lease decides
    assert states[3][0] == "PENDING"


async def test_claim_path_takes_a_dead_workers_claims(client: ApiClient, send_key: str) -> None:
    batch_id = await _claims(client, send_key)
    async with (
        judging_liveness(client.state.sessionmaker) as liveness,
        session_scope(client.state.sessionmaker) as session,
    ):
        await worker_heartbeat(session, LIVE, {})
        claimed = await _claim_chunk(session, client, batch_id, liveness, liveness.alive_cutoff())
    assert [r.seq for r in claimed] == [0, 2, 3]
    states = await _states(client, batch_id)
    assert states[0] == ("SENDING", liveness.key)
    assert states[1] == ("SENDING", worker_key(LIVE))


async def test_a_worker_that_cannot_judge_yet_takes_no_workers_claims(
    client: ApiClient, send_key: str
) -> None:
    """Just started, or back from a database outage: every heartbeat may be old, so only
    the lease decides until this worker has watched for WORKER_DEAD_AFTER."""
    batch_id = await _claims(client, send_key)
    liveness = Liveness(client.state.sessionmaker, new_worker_id(), DEAD_AFTER)
    await liveness.beat()
    assert not liveness.judging()
    async with session_scope(client.state.sessionmaker) as session:
        dead_before = liveness.alive_cutoff() if liveness.judging() else None
        claimed = await _claim_chunk(session, client, batch_id, liveness, dead_before)
        until = await repository.busy_claims_until(
            session, batch_id, 0, 4, lease=client.state.settings.claim_lease, dead_after=DEAD_AFTER
        )
    assert [r.seq for r in claimed] == [2, 3]
    # The dead worker's claim is claimable now (its heartbeat is long past the bound).
    assert until is not None and until <= datetime.now(UTC)
