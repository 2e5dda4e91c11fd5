"""Cancellations and suppressions, told to every worker the moment they commit.

A worker checks each message just before its first byte goes to the provider: was its batch
cancelled, or its address suppressed, since the recipient was claimed? The claim itself
already checked both in the database; what happens after the claim is learnt from notices,
kept in memory, so the check costs no query:

- PostgreSQL: the cancelling or suppressing transaction sends `NOTIFY mailer_withdrawals`
  (delivered at its commit, to every process, whichever process or CLI made the change);
  each worker LISTENs on a connection of its own.
- SQLite (the embedded default, one process): the notice is handed to the process's own
  workers after the commit. A change made from another process (the CLI) is seen at the
  next claim only.

Whenever the notices may have missed something (the LISTEN connection is down or was
re-established since the claim, a bulk import suppressed too many addresses to list, the
in-memory sets overflowed), the check asks the database instead, for that message only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import orjson
import structlog
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from mailer.db.listener import Listener

log = structlog.get_logger("mailer.withdrawals")

CHANNEL = "mailer_withdrawals"
MAX_LISTED = 1000  # more addresses in one change: announced as "some addresses" (bulk)
_PAYLOAD_MAX = 7000  # NOTIFY payloads must stay under 8000 bytes
MAX_REMEMBERED = 100_000  # per set; beyond it the sets restart (and claims re-check)
_PENDING_KEY = "mailer_withdrawals"


class Verdict(enum.Enum):
    SEND = "send"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"
    ASK_DATABASE = "ask_database"


# -- announcing (API, CLI, webhooks: in the transaction that makes the change) ------------


async def announce_cancelled(session: AsyncSession, batch_id: str) -> None:
    await _announce(session, [{"b": batch_id}])


async def announce_suppressed(session: AsyncSession, emails: Iterable[str]) -> None:
    """`emails` normalized, as the suppression list stores them."""
    listed = list(emails)
    if not listed:
        return
    if len(listed) > MAX_LISTED:
        await _announce(session, [{"s": "*"}])
        return
    notices: list[dict[str, Any]] = []
    part: list[str] = []
    size = 0
    for email in listed:
        if part and size + len(email) + 3 > _PAYLOAD_MAX:
            notices.append({"s": part})
            part, size = [], 0
        part.append(email)
        size += len(email) + 3
    notices.append({"s": part})
    await _announce(session, notices)


async def _announce(session: AsyncSession, notices: list[dict[str, Any]]) -> None:
    if session.get_bind().dialect.name == "postgresql":
        for notice in notices:
            await session.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": orjson.dumps(notice).decode()},
            )
        return
    session.sync_session.info.setdefault(_PENDING_KEY, []).extend(notices)


_local: set[Withdrawals] = set()


@event.listens_for(Session, "after_commit")
def _deliver_locally(session: Session) -> None:
    for notice in session.info.pop(_PENDING_KEY, ()):
        for watcher in list(_local):
            watcher.receive(notice)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


# -- watching (workers) -------------------------------------------------------------------


class Withdrawals:
    """A worker's view of the cancelled batches and suppressed addresses announced since
    it started watching."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._cancelled: set[str] = set()
        self._suppressed: set[str] = set()
        self._epoch = 0  # bumped whenever notices may have been missed
        self._listening = False
        self._listener = Listener(
            engine, CHANNEL, self, log, ("withdrawals_listening", "withdrawals_not_listening")
        )

    def mark(self) -> int:
        """Taken before a claim; verdict() needs it."""
        return self._epoch

    def verdict(self, batch_id: str, email: str, mark: int) -> Verdict:
        """Whether a message claimed at `mark` may go out now."""
        if batch_id in self._cancelled:
            return Verdict.CANCELLED
        if email in self._suppressed:
            return Verdict.SUPPRESSED
        if not self._listening or mark != self._epoch:
            return Verdict.ASK_DATABASE
        return Verdict.SEND

    def receive(self, notice: dict[str, Any]) -> None:
        batch_id = notice.get("b")
        if isinstance(batch_id, str):
            self._remember(self._cancelled, [batch_id])
        emails = notice.get("s")
        if emails == "*":
            self._epoch += 1  # some addresses, not listed: in-flight claims ask the database
        elif isinstance(emails, list):
            self._remember(self._suppressed, [e for e in emails if isinstance(e, str)])

    def _remember(self, into: set[str], items: list[str]) -> None:
        if len(into) + len(items) > MAX_REMEMBERED:
            into.clear()
            self._epoch += 1
        into.update(items)

    # -- the notice source --------------------------------------------------------------

    def start(self) -> None:
        if self._engine.dialect.name != "postgresql":
            _local.add(self)
            self._listening = True
            return
        self._listener.start("withdrawals")

    async def stop(self) -> None:
        _local.discard(self)
        await self._listener.stop()

    def on_listening(self) -> None:
        self._epoch += 1  # claims made before this point may have missed notices
        self._listening = True

    def on_not_listening(self) -> None:
        self._listening = False

    def on_notice(self, payload: str) -> None:
        try:
            notice = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._epoch += 1
            return
        if isinstance(notice, dict):
            self.receive(notice)
