"""The after-commit hook: callbacks run once the transaction commits, never after a rollback,
and a failing callback is logged without failing the committed unit of work."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from mailer.db import after_commit, session_scope
from mailer.db.after_commit import (
    Callback,
    run_committed,
    statements_commit_alone,
    take_committed,
)
from mailer.models import SystemState
from mailer.models.base import utcnow

Maker = async_sessionmaker[AsyncSession]


def _recorder(calls: list[str], name: str, *, fail: bool = False) -> Callback:
    async def callback() -> None:
        calls.append(name)
        if fail:
            raise RuntimeError(f"{name} failed")

    return callback


async def _rows(sessionmaker: Maker) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(SystemState)) or 0)


async def test_callbacks_run_in_order_after_the_commit(sessionmaker: Maker) -> None:
    calls: list[str] = []
    seen_rows: list[int] = []

    async def check_committed() -> None:
        seen_rows.append(await _rows(sessionmaker))  # another session sees the row

    async with session_scope(sessionmaker) as session:
        session.add(SystemState(key="k", value={}, updated_at=utcnow()))
        after_commit(session, _recorder(calls, "first"))
        after_commit(session, check_committed)
        after_commit(session, _recorder(calls, "second"))
        await session.flush()
        assert calls == []  # nothing before the commit
    assert calls == ["first", "second"]
    assert seen_rows == [1]


class Abort(Exception):
    pass


async def test_rollback_drops_the_callbacks(sessionmaker: Maker) -> None:
    calls: list[str] = []

    async def unit_of_work() -> None:
        async with session_scope(sessionmaker) as session:
            session.add(SystemState(key="k", value={}, updated_at=utcnow()))
            after_commit(session, _recorder(calls, "never"))
            await session.flush()
            raise Abort

    with pytest.raises(Abort):
        await unit_of_work()
    assert calls == []
    assert await _rows(sessionmaker) == 0


async def test_explicit_rollback_then_commit_runs_only_later_callbacks(sessionmaker: Maker) -> None:
    calls: list[str] = []
    async with session_scope(sessionmaker) as session:
        after_commit(session, _recorder(calls, "rolled back"))
        await session.rollback()
        after_commit(session, _recorder(calls, "committed"))
    assert calls == ["committed"]


async def test_a_commit_inside_the_unit_makes_earlier_callbacks_due(sessionmaker: Maker) -> None:
    """Callbacks registered before an intermediate commit survive a later rollback."""
    calls: list[str] = []
    async with sessionmaker() as session:
        after_commit(session, _recorder(calls, "first"))
        await session.commit()
        after_commit(session, _recorder(calls, "second"))
        await session.rollback()
        await run_committed(session)
    assert calls == ["first"]


async def test_a_failing_callback_is_logged_and_the_next_still_runs(sessionmaker: Maker) -> None:
    calls: list[str] = []
    with capture_logs() as logs:
        async with session_scope(sessionmaker) as session:
            session.add(SystemState(key="k", value={}, updated_at=utcnow()))
            after_commit(session, _recorder(calls, "broken", fail=True))
            after_commit(session, _recorder(calls, "next"))
    assert calls == ["broken", "next"]
    assert await _rows(sessionmaker) == 1  # the unit of work stays committed
    assert [e["event"] for e in logs] == ["after_commit_callback_failed"]


async def test_due_callbacks_are_taken_once(sessionmaker: Maker) -> None:
    calls: list[str] = []
    async with sessionmaker() as session:
        after_commit(session, _recorder(calls, "once"))
        await session.commit()
        due = take_committed(session)
        assert take_committed(session) == []
    assert len(due) == 1
    await due[0]()
    assert calls == ["once"]


async def test_a_unit_that_took_no_connection_still_runs_its_callbacks(
    sessionmaker: Maker,
) -> None:
    """session_scope commits and closes a session that never took a connection without
    awaiting (its statements ran elsewhere, `mailer.db.pg.lend`): the callbacks still run
    after that commit, and a rollback still drops them."""
    calls: list[str] = []
    async with session_scope(sessionmaker) as session:
        after_commit(session, _recorder(calls, "after"))
    assert calls == ["after"]

    async def refused() -> None:
        async with session_scope(sessionmaker) as session:
            after_commit(session, _recorder(calls, "never"))
            raise Abort

    with pytest.raises(Abort):
        await refused()
    assert calls == ["after"]


async def test_objects_added_without_a_flush_are_written_at_the_commit(
    sessionmaker: Maker,
) -> None:
    """A session holding unflushed objects has I/O to do at its commit, connection or not:
    it goes through AsyncSession's own commit."""
    async with session_scope(sessionmaker) as session:
        session.add(SystemState(key="unflushed", value={}, updated_at=utcnow()))
    assert await _rows(sessionmaker) == 1


async def test_a_unit_whose_statements_commit_alone_opens_no_transaction(
    sessionmaker: Maker,
) -> None:
    """In a session declared to commit each statement on its own
    (`mailer.db.pg.single_statement_unit`), a callback begins no transaction: it becomes due
    when the unit of work ends without an error, and is dropped when it ends with one."""
    calls: list[str] = []
    async with session_scope(sessionmaker) as session:
        statements_commit_alone(session)
        after_commit(session, _recorder(calls, "after"))
        assert not session.in_transaction()
        assert calls == []
    assert calls == ["after"]

    async def refused() -> None:
        async with session_scope(sessionmaker) as session:
            statements_commit_alone(session)
            after_commit(session, _recorder(calls, "never"))
            raise Abort

    with pytest.raises(Abort):
        await refused()
    assert calls == ["after"]


async def test_a_unit_whose_statements_commit_alone_runs_its_callbacks_after_orm_work(
    sessionmaker: Maker,
) -> None:
    """The same session after an ORM statement (it took a connection): the callbacks are due
    at its commit, and the row is there when they run."""
    seen_rows: list[int] = []

    async def check_committed() -> None:
        seen_rows.append(await _rows(sessionmaker))

    async with session_scope(sessionmaker) as session:
        statements_commit_alone(session)
        session.add(SystemState(key="alone", value={}, updated_at=utcnow()))
        await session.flush()
        after_commit(session, check_committed)
    assert seen_rows == [1]
