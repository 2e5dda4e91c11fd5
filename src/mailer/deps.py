"""Request dependencies shared by every router: state and the per-request session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from mailer.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.mailer
    return state


State = Annotated[AppState, Depends(get_state)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request. Commits when the endpoint returns, before the response is
    sent, so anything acknowledged is durable; rolls back on any error."""
    state = get_state(request)
    async with state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


# Largest offset the databases take (a signed 64-bit integer).
MAX_OFFSET = 2**63 - 1


class Page:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")] = 0,
    ) -> None:
        self.limit = limit
        self.offset = offset


Paging = Annotated[Page, Depends()]
