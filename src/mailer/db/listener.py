"""A PostgreSQL LISTEN kept open in the background, re-established whenever it is lost.

Its subscriber is told when the LISTEN is up (`on_listening`: notices from now on arrive) and
whenever it may have missed a notice (`on_not_listening`: lost, not yet re-established, or
stopped); between the two, each notice's payload goes to `on_notice`. A failure is logged once
(the `events` named at construction: up again, down), not on every retry while the database
is away.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailer.db import pg

RECONNECT_SECONDS = 1.0


class Subscriber(Protocol):
    def on_notice(self, payload: str) -> None: ...

    def on_listening(self) -> None: ...

    def on_not_listening(self) -> None: ...


class Listener:
    def __init__(
        self,
        engine: AsyncEngine,
        channel: str,
        subscriber: Subscriber,
        log: Any,
        events: tuple[str, str],
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._subscriber = subscriber
        self._log = log
        self._up_event, self._down_event = events
        self._connection: AsyncConnection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, name: str) -> None:
        self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self._listen()
                if failing:
                    self._log.info(self._up_event)
                failing = False
                await self._lost.wait()
                self._log.warning(self._down_event, reason="listen connection lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the owner does without meanwhile
                if not failing:
                    self._log.warning(self._down_event, reason=type(exc).__name__)
                failing = True
            await self._disconnect()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self) -> None:
        self._lost.clear()
        connection = await self._engine.connect()
        self._connection = connection
        await pg.listen(connection, self._channel, self._on_notify, self._on_terminated)
        self._subscriber.on_listening()

    async def _disconnect(self) -> None:
        self._subscriber.on_not_listening()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()
            with contextlib.suppress(Exception):
                await connection.close()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._subscriber.on_notice(payload)

    def _on_terminated(self, *_: Any) -> None:
        self._subscriber.on_not_listening()
        self._lost.set()
