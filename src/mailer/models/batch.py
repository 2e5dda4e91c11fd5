from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint, text, true
from sqlalchemy.orm import Mapped, mapped_column

from mailer.ids import new_id
from mailer.models.base import Base, JSONType, UTCDateTime, transient, utcnow
from mailer.models.enums import BatchPriority, BatchStatus


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("api_key_id", "idempotency_key"),
        Index("ix_batches_status_send_at", "status", "send_at"),
        Index("ix_batches_created_at", "created_at"),
        # GET /emails?tag=name:value finds the batches first (`tags @> '{"name": "value"}'`).
        # PostgreSQL only: SQLite has no index for a JSON key chosen at query time.
        Index(
            "ix_batches_tags",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        ).ddl_if(dialect="postgresql"),
        # Finished batches retention has not purged yet, by age.
        Index(
            "ix_batches_unpurged_completed_at",
            "completed_at",
            postgresql_where=text("purged_at IS NULL AND completed_at IS NOT NULL"),
            sqlite_where=text("purged_at IS NULL AND completed_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    template_id: Mapped[str] = mapped_column(String(26), ForeignKey("templates.id"), index=True)
    template_version_id: Mapped[str] = mapped_column(String(26), ForeignKey("template_versions.id"))
    status: Mapped[str] = mapped_column(String(16), default=BatchStatus.SENDING)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    tags: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    from_address: Mapped[str | None] = mapped_column(String(400), nullable=True)
    reply_to: Mapped[list[str]] = mapped_column(JSONType, default=list)
    unsubscribe: Mapped[bool] = mapped_column(default=True)
    # "high": the transactional lane (POST /emails, or a batch asked so); else "bulk".
    priority: Mapped[str] = mapped_column(
        String(8), default=BatchPriority.BULK, server_default=BatchPriority.BULK
    )
    # False for transactional mail: addresses suppressed only because they unsubscribed
    # still get it (bounces, complaints and manual suppressions still hold it back).
    respect_unsubscribe: Mapped[bool] = mapped_column(default=True, server_default=true())
    # Extra message headers (checked at creation), e.g. {"X-Entity-Ref-ID": "123"}.
    headers: Mapped[dict[str, str]] = mapped_column(
        JSONType, default=dict, server_default=text("'{}'")
    )
    api_key_id: Mapped[str | None] = mapped_column(
        String(26), ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    total_recipients: Mapped[int] = mapped_column(Integer(), default=0)
    duplicate_count: Mapped[int] = mapped_column(Integer(), default=0)
    # Counters kept by the worker and the webhook so reads never scan recipients.
    suppressed_count: Mapped[int] = mapped_column(Integer(), default=0)
    sent_count: Mapped[int] = mapped_column(Integer(), default=0)
    failed_count: Mapped[int] = mapped_column(Integer(), default=0)
    cancelled_count: Mapped[int] = mapped_column(Integer(), default=0)
    delivered_count: Mapped[int] = mapped_column(Integer(), default=0)
    bounced_count: Mapped[int] = mapped_column(Integer(), default=0)
    complained_count: Mapped[int] = mapped_column(Integer(), default=0)
    chunk_size: Mapped[int] = mapped_column(Integer(), default=100)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Set when retention deleted the batch's recipients and events (its counters stay).
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @classmethod
    def new(cls, *, scheduled: bool, now: datetime, **fields: Any) -> Batch:
        """A batch as POST /batches and POST /emails create it: SCHEDULED until its send_at,
        otherwise SENDING from `now`."""
        fields["id"] = new_id()
        fields["status"] = BatchStatus.SCHEDULED if scheduled else BatchStatus.SENDING
        fields["created_at"] = now
        fields["started_at"] = None if scheduled else now
        return transient(cls, fields)
