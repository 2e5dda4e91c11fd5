"""Database access: engine and session factories (`engine`), work run after a commit
(`after_commit`), the PostgreSQL/SQLite differences (`dialect`) and the hand-written
PostgreSQL statements (`pg`)."""

from mailer.db.after_commit import after_commit
from mailer.db.engine import (
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
    session_scope,
)

__all__ = [
    "after_commit",
    "create_engine",
    "create_read_sessionmaker",
    "create_sessionmaker",
    "session_scope",
]
