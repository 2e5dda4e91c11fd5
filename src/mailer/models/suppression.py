from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from mailer.models.base import Base, BigIntId, JSONType, UTCDateTime, utcnow


class Suppression(Base):
    __tablename__ = "suppressions"
    __table_args__ = (Index("ix_suppressions_created_at", "created_at"),)

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SoftBounce(Base):
    """Transient bounces, counted per address to suppress after SOFT_BOUNCE_LIMIT in 30 days."""

    __tablename__ = "soft_bounces"
    __table_args__ = (Index("ix_soft_bounces_email_created_at", "email", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
