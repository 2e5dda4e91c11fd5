"""Status and type vocabularies, stored as strings."""

from enum import StrEnum


class Scope(StrEnum):
    SEND = "send"
    ADMIN = "admin"


class BatchStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    SENDING = "SENDING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class BatchPriority(StrEnum):
    BULK = "bulk"
    HIGH = "high"  # the transactional lane: its own queue, served first


class RecipientStatus(StrEnum):
    PENDING = "PENDING"
    SENDING = "SENDING"
    RETRYING = "RETRYING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    BOUNCED = "BOUNCED"
    COMPLAINED = "COMPLAINED"
    FAILED = "FAILED"
    SUPPRESSED = "SUPPRESSED"
    CANCELLED = "CANCELLED"


UNFINISHED_STATUSES = (RecipientStatus.PENDING, RecipientStatus.SENDING, RecipientStatus.RETRYING)
CLAIMABLE_STATUSES = (RecipientStatus.PENDING, RecipientStatus.RETRYING)


class EventType(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    RETRY = "RETRY"
    FAILED = "FAILED"
    SUPPRESSED = "SUPPRESSED"
    BOUNCE = "BOUNCE"
    COMPLAINT = "COMPLAINT"
    DELIVERY = "DELIVERY"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    CANCELLED = "CANCELLED"
    # SES configuration-set events beyond the lifecycle above
    OPEN = "OPEN"
    CLICK = "CLICK"
    REJECT = "REJECT"
    DELIVERY_DELAY = "DELIVERY_DELAY"
    RENDERING_FAILURE = "RENDERING_FAILURE"
    SEND = "SEND"
    UNKNOWN = "UNKNOWN"


class SuppressionReason(StrEnum):
    BOUNCE = "BOUNCE"
    COMPLAINT = "COMPLAINT"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    MANUAL = "MANUAL"


class MetricKind(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    DELIVERED = "delivered"
    SUPPRESSED = "suppressed"
    RETRIED = "retried"
    UNSUBSCRIBED = "unsubscribed"
