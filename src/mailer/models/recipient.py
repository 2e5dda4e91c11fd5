from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.models.base import Base, BigIntId, JSONType, UTCDateTime, utcnow
from mailer.models.enums import RecipientStatus

RARE_STATUSES = text(
    "status IN ('FAILED', 'BOUNCED', 'COMPLAINED', 'SUPPRESSED', 'CANCELLED', 'RETRYING')"
)


class Recipient(Base):
    """One message: a batch's recipient. Chunks of a batch are ranges of `seq`."""

    __tablename__ = "recipients"
    # Ingest writes every row through every index, so the table keeps only the unique
    # (batch_id, seq), which claims, listings and completion checks use; the two lookups that
    # concern sent or claimed rows are partial and cost nothing at ingest (docs/performance.md).
    __table_args__ = (
        UniqueConstraint("batch_id", "seq"),
        Index(
            "ix_recipients_provider_message_id",
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
            sqlite_where=text("provider_message_id IS NOT NULL"),
        ),
        Index(
            "ix_recipients_sending_claimed_at",
            "claimed_at",
            postgresql_where=text("status = 'SENDING'"),
            sqlite_where=text("status = 'SENDING'"),
        ),
        # A batch's in-flight split (GET /batches/:id while it sends; migration 0007).
        Index(
            "ix_recipients_in_flight_batch_id",
            "batch_id",
            postgresql_where=text("status IN ('SENDING', 'RETRYING')"),
            sqlite_where=text("status IN ('SENDING', 'RETRYING')"),
        ),
        # The console: one address across batches, and a batch's failures.
        Index("ix_recipients_email", "email"),
        Index(
            "ix_recipients_failed_batch_id_seq",
            "batch_id",
            "seq",
            postgresql_where=text("status = 'FAILED'"),
            sqlite_where=text("status = 'FAILED'"),
        ),
        # GET /emails?status= for the statuses that are rare among sent mail, newest first.
        # A row enters it only when it becomes one of them: a send (SENDING, SENT, DELIVERED)
        # never writes it. The common statuses walk the primary key instead.
        Index(
            "ix_recipients_rare_status_id",
            "status",
            "id",
            postgresql_where=RARE_STATUSES,
            sqlite_where=RARE_STATUSES,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(26), ForeignKey("batches.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer())
    email: Mapped[str] = mapped_column(String(320))
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=RecipientStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    last_error: Mapped[str | None] = mapped_column(Text(), nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The heartbeat key (system_state) of the worker holding the SENDING claim.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
