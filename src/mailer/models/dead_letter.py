from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.models.base import Base, BigIntId, JSONType, UTCDateTime, utcnow


class DeadLetter(Base):
    """Work that exhausted its attempts: a chunk (seq range) of a batch and the last error."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("batches.id", ondelete="CASCADE"), index=True
    )
    seq_start: Mapped[int] = mapped_column(Integer())
    seq_end: Mapped[int] = mapped_column(Integer())
    recipient_count: Mapped[int] = mapped_column(Integer())
    recipient_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    error: Mapped[str] = mapped_column(Text())
    attempts: Mapped[int] = mapped_column(Integer())
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
