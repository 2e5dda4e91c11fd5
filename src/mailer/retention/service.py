"""Purge: delete what is older than the retention period, a little at a time.

Finished batches (COMPLETED or CANCELLED) whose `completed_at` is older than the cutoff lose
their recipients and events; the batch row stays, with its counters, so an old batch still
shows its totals (`purged_at` says its detail is gone). Dead letters, per-minute metrics and
events of no batch older than the cutoff go too. Every transaction deletes at most
`rows_per_transaction` rows through an index: short, few locks, never in a sender's way.
Between transactions the purge pauses so that it works only `duty` of the time (DUTY by
default): on a database that also serves the workers, deleting flat out takes the CPU and
I/O the sends need (bench/purge).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.db import session_scope
from mailer.models.base import utcnow
from mailer.retention import repository

ROWS_PER_TRANSACTION = 2000
DUTY = 0.2


@dataclass
class PurgeReport:
    cutoff: datetime
    batches: int = 0
    recipients: int = 0
    events: int = 0
    dead_letters: int = 0
    metrics: int = 0
    transactions: int = 0
    finished: bool = True  # False: the budget ran out with work left
    counts: dict[str, int] = field(default_factory=dict)  # dry run: what would go

    def total(self) -> int:
        return self.recipients + self.events + self.dead_letters + self.metrics


def cutoff_for(days: float) -> datetime:
    return utcnow() - timedelta(days=days)


async def dry_run(sessionmaker: async_sessionmaker[AsyncSession], cutoff: datetime) -> PurgeReport:
    async with session_scope(sessionmaker) as session:
        counts = await repository.count_purgeable(session, cutoff)
    report = PurgeReport(cutoff=cutoff, counts=counts)
    return report


Step = Callable[[AsyncSession], Awaitable[int]]


class _Budget:
    def __init__(self, report: PurgeReport, max_transactions: int | None, duty: float) -> None:
        self.report = report
        self.max = max_transactions
        self.rest = 1 / duty - 1  # pause per second of work

    async def pause_after(self, worked: float) -> None:
        if self.rest > 0:
            await asyncio.sleep(worked * self.rest)

    def spent(self) -> bool:
        if self.max is not None and self.report.transactions >= self.max:
            self.report.finished = False
            return True
        return False


async def _drain(
    sessionmaker: async_sessionmaker[AsyncSession],
    budget: _Budget,
    step: Step,
    kind: str,
    *,
    full: int | None,
) -> bool:
    """Run `step` (one transaction each) until it deletes fewer than `full` rows (or none
    when `full` is None). False if the budget ran out first."""
    report = budget.report
    while True:
        if budget.spent():
            return False
        started = time.perf_counter()
        async with session_scope(sessionmaker) as session:
            n = await step(session)
        report.transactions += 1
        await budget.pause_after(time.perf_counter() - started)
        setattr(report, kind, getattr(report, kind) + n)
        if n == 0 or (full is not None and n < full):
            return True


async def purge(
    sessionmaker: async_sessionmaker[AsyncSession],
    cutoff: datetime,
    *,
    rows_per_transaction: int = ROWS_PER_TRANSACTION,
    max_transactions: int | None = None,
    duty: float = DUTY,
) -> PurgeReport:
    """Delete everything older than `cutoff`, or stop after `max_transactions` (the
    reconciler's budget per pass) with `finished=False`. `duty` in (0, 1]: the share of
    the time spent in transactions (1: no pauses)."""
    if not 0 < duty <= 1:
        raise ValueError("duty must be in (0, 1]")
    report = PurgeReport(cutoff=cutoff)
    budget = _Budget(report, max_transactions, duty)
    rows = rows_per_transaction
    while True:
        async with session_scope(sessionmaker) as session:
            batches = await repository.purgeable_batches(session, cutoff, 100)
        if not batches:
            break
        for batch_id in batches:
            for kind, delete in (
                ("events", repository.delete_events_of),
                ("recipients", repository.delete_recipients_of),
            ):
                step = partial(_of_batch, delete, batch_id, rows)
                if not await _drain(sessionmaker, budget, step, kind, full=rows):
                    return report
            async with session_scope(sessionmaker) as session:
                await repository.mark_purged(session, batch_id)
            report.batches += 1
    for kind, older in (
        ("events", repository.delete_loose_events),
        ("dead_letters", repository.delete_dead_letters),
    ):
        step = partial(_older, older, cutoff, rows)
        if not await _drain(sessionmaker, budget, step, kind, full=rows):
            return report
    await _drain(
        sessionmaker,
        budget,
        partial(repository.delete_metrics, cutoff=cutoff),
        "metrics",
        full=None,
    )
    return report


async def _of_batch(
    delete: Callable[[AsyncSession, str, int], Awaitable[int]],
    batch_id: str,
    limit: int,
    session: AsyncSession,
) -> int:
    return await delete(session, batch_id, limit)


async def _older(
    delete: Callable[[AsyncSession, datetime, int], Awaitable[int]],
    cutoff: datetime,
    limit: int,
    session: AsyncSession,
) -> int:
    return await delete(session, cutoff, limit)
