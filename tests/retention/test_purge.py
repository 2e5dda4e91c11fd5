"""Retention: old finished batches lose their recipients and events (the batch row and its
counters stay), old dead letters and metrics go; nothing younger or unfinished is touched;
the work is done in small transactions and can stop on a budget and resume."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from sqlalchemy import func, select, update

from mailer.cli.purge import parse_age
from mailer.db import session_scope
from mailer.models import Attachment, Batch, DeadLetter, Event, Metric, Recipient
from mailer.retention import service
from tests.cli.process import clean_env, mailer
from tests.fixtures.client import ApiClient
from tests.fixtures.pipeline import create_template, make_recipients, post_batch

OLD = datetime.now(UTC) - timedelta(days=100)
RECENT = datetime.now(UTC) - timedelta(days=1)


async def _batch(c: ApiClient, key: str, count: int, status: str, completed_at: datetime) -> str:
    template_id = await create_template(c.http, key)
    out = (await post_batch(c.http, key, template_id, make_recipients(count))).json()
    async with session_scope(c.state.sessionmaker) as session:
        finished = status != "SENDING"
        await session.execute(
            update(Batch)
            .where(Batch.id == out["id"])
            .values(
                status=status,
                completed_at=completed_at if finished else None,
                created_at=completed_at,
                sent_count=count if finished else 0,
            )
        )
        if finished:
            await session.execute(
                update(Recipient).where(Recipient.batch_id == out["id"]).values(status="SENT")
            )
        for _ in range(3):
            session.add(Event(batch_id=out["id"], type="SENT", data={}, created_at=completed_at))
        session.add(
            Attachment(
                batch_id=out["id"],
                position=0,
                filename="a.txt",
                content_type="text/plain",
                content=b"x",
            )
        )
        session.add(
            DeadLetter(
                batch_id=out["id"],
                seq_start=0,
                seq_end=1,
                recipient_count=1,
                recipient_ids=[],
                error="x",
                attempts=3,
                failed_at=completed_at,
            )
        )
    batch_id: str = out["id"]
    return batch_id


async def _counts(c: ApiClient, batch_id: str) -> tuple[int, int]:
    async with session_scope(c.state.sessionmaker) as session:
        recipients = await session.scalar(
            select(func.count()).where(Recipient.batch_id == batch_id)
        )
        events = await session.scalar(select(func.count()).where(Event.batch_id == batch_id))
    return int(recipients or 0), int(events or 0)


async def test_purge_deletes_only_what_is_old_and_finished(
    client: ApiClient, send_key: str
) -> None:
    old = await _batch(client, send_key, 7, "COMPLETED", OLD)
    old_cancelled = await _batch(client, send_key, 3, "CANCELLED", OLD)
    recent = await _batch(client, send_key, 4, "COMPLETED", RECENT)
    unfinished = await _batch(client, send_key, 2, "SENDING", OLD)
    async with session_scope(client.state.sessionmaker) as session:
        session.add(Metric(bucket=OLD.replace(second=0, microsecond=0), kind="sent", count=5))
        session.add(Metric(bucket=RECENT.replace(second=0, microsecond=0), kind="sent", count=6))
    cutoff = service.cutoff_for(90)

    preview = await service.dry_run(client.state.sessionmaker, cutoff)
    assert preview.counts["batches"] == 2
    assert preview.counts["recipients"] == 10
    assert preview.counts["dead_letters"] == 3  # the two old batches' and the unfinished one's
    assert preview.counts["metrics"] == 1
    assert await _counts(client, old) != (0, 0)  # a dry run deletes nothing

    # Three rows per transaction and a budget of two: it stops, then resumes.
    first = await service.purge(
        client.state.sessionmaker, cutoff, rows_per_transaction=3, max_transactions=2
    )
    assert not first.finished and first.transactions == 2
    rest = await service.purge(client.state.sessionmaker, cutoff, rows_per_transaction=3)
    assert rest.finished
    assert first.recipients + rest.recipients == 10
    assert first.batches + rest.batches == 2

    for batch_id in (old, old_cancelled):
        assert await _counts(client, batch_id) == (0, 0)
    assert await _counts(client, recent) == (4, 4)  # younger than the period (+ QUEUED?)
    assert (await _counts(client, unfinished))[0] == 2  # never finished: kept
    async with session_scope(client.state.sessionmaker) as session:
        kept = await session.get(Batch, old)
        letters = await session.scalar(select(func.count()).select_from(DeadLetter))
        metrics = await session.scalar(select(func.count()).select_from(Metric))
        files = await session.scalars(select(Attachment.batch_id))
        kept_files = sorted(files.all())
    assert kept_files == sorted([recent, unfinished])  # purged batches' attachments went
    assert kept is not None and kept.sent_count == 7 and kept.purged_at is not None
    assert letters == 1  # the recent batch's
    assert metrics == 1
    again = await service.purge(client.state.sessionmaker, cutoff)
    assert again.total() == 0 and again.batches == 0


def test_age_parsing() -> None:
    assert parse_age("30d") == 30
    assert parse_age("12h") == 0.5
    assert parse_age("7") == 7
    with pytest.raises(typer.BadParameter):
        parse_age("thirty days")


async def test_the_command_shows_its_cutoff_in_utc_with_a_z(
    database_url: str, tmp_path: Path
) -> None:
    env = clean_env(DATABASE_URL=database_url)
    for args in (["--dry-run"], []):
        result = await mailer("purge", "--older-than", "30d", *args, env=env, cwd=tmp_path)
        assert result.code == 0, result.err
        assert re.search(r"\(older than \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", result.out), result.out
