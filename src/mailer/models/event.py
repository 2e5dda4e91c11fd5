from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.models.base import Base, BigIntId, JSONType, UTCDateTime, utcnow


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_batch_id_id", "batch_id", "id"),
        Index("ix_events_batch_id_type", "batch_id", "type"),
        Index("ix_events_created_at", "created_at"),
        # The console's address search: the events of one message.
        Index(
            "ix_events_recipient_id",
            "recipient_id",
            postgresql_where=text("recipient_id IS NOT NULL"),
            sqlite_where=text("recipient_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str | None] = mapped_column(
        String(26), ForeignKey("batches.id", ondelete="CASCADE"), nullable=True
    )
    recipient_id: Mapped[int | None] = mapped_column(BigIntId, nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
