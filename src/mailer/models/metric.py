from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from mailer.models.base import Base, UTCDateTime


class Metric(Base):
    """Per-minute counters by kind, for /admin/metrics?hours=N."""

    __tablename__ = "metrics"

    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger(), default=0)
