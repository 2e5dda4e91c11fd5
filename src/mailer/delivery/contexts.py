"""Per-worker cache of BatchContext (batch row + immutable template version)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.config import Settings
from mailer.db import session_scope
from mailer.db.dialect import single_statement_writes
from mailer.delivery import repository
from mailer.delivery.compose import BatchContext, batch_context
from mailer.models import TemplateVersion
from mailer.reputation import service as reputation
from mailer.templates.rendering import (
    CompiledTemplate,
    TemplateSyntaxError,
    compiles_quickly,
    get_compiled,
    peek_compiled,
)


class BatchContexts:
    def __init__(self, settings: Settings, *, size: int = 512, ttl: float = 5.0) -> None:
        self._settings = settings
        self._size = size
        self._ttl = ttl
        self._items: OrderedDict[str, tuple[float, BatchContext]] = OrderedDict()
        self._compiling: dict[str, asyncio.Task[CompiledTemplate]] = {}

    async def get(
        self, sessionmaker: async_sessionmaker[AsyncSession], batch_id: str
    ) -> BatchContext | None:
        hit = self._items.get(batch_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl:
            self._items.move_to_end(batch_id)
            return hit[1]
        # Read in a short transaction and compile after it: on SQLite every transaction
        # holds the write lock, which a compile of seconds must not keep.
        async with session_scope(sessionmaker) as session:
            await single_statement_writes(session)  # one read: no BEGIN and COMMIT
            batch, version, attachments = await repository.batch_for_sending(session, batch_id)
        if batch is None:
            self._items.pop(batch_id, None)
            return None
        if version is None:
            return None
        ctx = batch_context(
            batch,
            version,
            self._settings,
            render_inline=await self._renders_quickly(version),
            attachments=attachments,
        )
        self._items[batch_id] = (now, ctx)
        self._items.move_to_end(batch_id)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return ctx

    async def _renders_quickly(self, version: TemplateVersion) -> bool:
        """Compile the version once, on a thread unless it is small (a large template takes
        seconds), and say whether its messages may render on the event loop."""
        compiled = peek_compiled(version.id)
        if compiled is None and compiles_quickly(version.subject, version.html, version.text):
            try:
                compiled = get_compiled(
                    version.id, subject=version.subject, html=version.html, text=version.text
                )
            except TemplateSyntaxError:
                return False
        if compiled is None:
            task = self._compiling.get(version.id)
            if task is None:  # one compile per version, however many chunks ask at once
                task = asyncio.create_task(
                    asyncio.to_thread(
                        get_compiled,
                        version.id,
                        subject=version.subject,
                        html=version.html,
                        text=version.text,
                    )
                )
                self._compiling[version.id] = task
                task.add_done_callback(lambda _: self._compiling.pop(version.id, None))
            try:
                compiled = await asyncio.shield(task)
            except TemplateSyntaxError:
                return False  # each message reports it, as before
        return compiled.renders_quickly


class PauseCache:
    """Whether the reputation guard paused bulk sending, read at most once a second."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], ttl: float = 1.0) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._value = False
        self._read_at = -1e9

    async def is_paused(self) -> bool:
        now = time.monotonic()
        if now - self._read_at >= self._ttl:
            async with self._sessionmaker() as session:
                self._value = (await reputation.current(session)).paused
            self._read_at = now
        return self._value
