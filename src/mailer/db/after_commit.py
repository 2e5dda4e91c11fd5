"""Work to do once a transaction has committed (enqueueing the chunks of what it wrote).

`after_commit(session, callback)` registers a coroutine function on the session. When the
session's transaction commits, the callbacks registered in it become due; when it rolls
back they are dropped. Whoever owns the session runs the due ones after the commit:
`session_scope` (worker, CLI) awaits them, the API's request session hands them to the
response's background tasks (they run after the response is sent). A failing callback is
logged and never raised: the transaction it follows is committed and acknowledged, and what
the callbacks do (enqueue) is repaired by the reconciler if it is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

log = structlog.get_logger("mailer.db")

Callback = Callable[[], Awaitable[Any]]

_PENDING = "mailer.after_commit.pending"
_COMMITTED = "mailer.after_commit.committed"
_ALONE = "mailer.after_commit.statements_commit_alone"


def after_commit(session: AsyncSession, callback: Callback) -> None:
    """Run `callback` after the session's current transaction commits; never if it rolls back.
    In a session whose statements commit on their own (`statements_commit_alone`): once its
    unit of work has ended without an error."""
    if not session.info.get(_ALONE):
        sync = session.sync_session
        if not sync.in_transaction():
            sync.begin()  # the callback belongs to a transaction, even one with no statement
    session.info.setdefault(_PENDING, []).append(callback)


def statements_commit_alone(session: AsyncSession) -> None:
    """Declare that each of the session's statements commits on its own
    (`mailer.db.pg.single_statement_unit`): an `after_commit` callback then opens no
    transaction of its own (a SessionTransaction begun and committed around nothing, ~5 %
    of a small POST's CPU; bench/api, issue 18): `session_scope` makes it due."""
    session.info[_ALONE] = True


def commits_alone(session: AsyncSession) -> bool:
    """Whether `statements_commit_alone` was said of the session."""
    return bool(session.info.get(_ALONE))


def make_due(session: AsyncSession) -> None:
    """For a session whose statements commit alone, ended without an error outside any
    transaction: its pending callbacks become due. (With an error they go with it.)"""
    pending = session.info.pop(_PENDING, None)
    if pending:
        session.info.setdefault(_COMMITTED, []).extend(pending)


def take_committed(session: AsyncSession) -> list[Callback]:
    """The callbacks whose transaction has committed, removed from the session."""
    committed: list[Callback] = session.info.pop(_COMMITTED, [])
    return committed


async def run_callbacks(callbacks: Sequence[Callback]) -> None:
    """Await each callback in order; a failure is logged and the next one still runs."""
    for callback in callbacks:
        await run_logged(callback)


async def run_logged(callback: Callback) -> None:
    try:
        await callback()
    except Exception:
        log.exception("after_commit_callback_failed", callback=getattr(callback, "__name__", None))


async def run_committed(session: AsyncSession) -> None:
    await run_callbacks(take_committed(session))


@event.listens_for(Session, "after_commit")
def _on_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        session.info.setdefault(_COMMITTED, []).extend(pending)


@event.listens_for(Session, "after_soft_rollback")
def _on_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:  # the outermost transaction, not a savepoint
        session.info.pop(_PENDING, None)
