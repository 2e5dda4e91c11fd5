"""Outbound webhooks: the customer's endpoints and the outbox of events to deliver to them.

Not to be confused with `webhook_messages` (the dedupe ids of inbound SNS notifications).
"""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.ids import new_id
from mailer.models.base import Base, BigIntId, JSONType, UTCDateTime, utcnow


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2000))
    # Event types sent to this endpoint; empty means every type.
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    description: Mapped[str] = mapped_column(String(500), default="")
    enabled: Mapped[bool] = mapped_column(Boolean(), default=True)
    # Standard Webhooks secrets ("whsec_" + base64). The previous one still signs until
    # previous_secret_expires_at (rotation overlap).
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), nullable=True
    )
    disabled_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # Set at the first failed attempt after a success; cleared by a success.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DeliveryState:
    PENDING = "PENDING"  # waiting for its next attempt (or in flight under a lease)
    DELIVERED = "DELIVERED"  # the endpoint answered 2xx
    FAILED = "FAILED"  # retries used up, or the endpoint answered 410


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row, written in the transaction of the change
    that produced the event, and the state of its delivery (the latest attempt's result).

    No foreign key to the endpoint: the writers use a per-process cache of the endpoints, so
    a row may name an endpoint deleted a moment ago; the dispatcher ignores such rows and
    deletes them."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_created_at", "created_at"),  # retention
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("state = 'PENDING'"),
            sqlite_where=text("state = 'PENDING'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    # The `webhook-id` header: the same on every attempt and replay, so receivers dedupe.
    event_id: Mapped[str] = mapped_column(String(40))
    endpoint_id: Mapped[str] = mapped_column(String(26))
    type: Mapped[str] = mapped_column(String(40))
    batch_id: Mapped[str | None] = mapped_column(String(26), nullable=True)
    recipient_id: Mapped[int | None] = mapped_column(BigIntId, nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The JSON body, composed at the first attempt and sent unchanged afterwards.
    payload: Mapped[str | None] = mapped_column(Text(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer(), nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    latency_ms: Mapped[int | None] = mapped_column(Integer(), nullable=True)
    response: Mapped[str | None] = mapped_column(Text(), nullable=True)  # first 1 KB
