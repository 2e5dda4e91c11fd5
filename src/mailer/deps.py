"""Request dependencies shared by every router: state and the per-request session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.db.after_commit import run_logged, take_committed
from mailer.state import AppState


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a thread
# pool, a thread hand-off per request.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.mailer
    return state


State = Annotated[AppState, Depends(get_state)]


# Requests that only read (the unsubscribe page, say, changes nothing on GET).
READ_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request, background: BackgroundTasks) -> AsyncIterator[AsyncSession]:
    """One session per request. Commits when the endpoint returns, before the response is
    sent, so anything acknowledged is durable; rolls back on any error. What the request
    registered with `after_commit` runs after the response is sent."""
    state: AppState = request.app.state.mailer
    maker = state.read_sessionmaker if request.method in READ_METHODS else state.sessionmaker
    async with maker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        for callback in take_committed(session):
            background.add_task(run_logged, callback)


Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


# Largest offset the databases take (a signed 64-bit integer).
MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


async def get_page(
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")] = 0,
) -> Page:
    return Page(limit, offset)


Paging = Annotated[Page, Depends(get_page)]
