"""SQLAlchemy models: one table per file. Importing this package registers them all."""

from mailer.models.api_key import ApiKey
from mailer.models.attachment import Attachment
from mailer.models.base import Base
from mailer.models.batch import Batch
from mailer.models.console_session import ConsoleSession
from mailer.models.dead_letter import DeadLetter
from mailer.models.event import Event
from mailer.models.metric import Metric
from mailer.models.recipient import Recipient
from mailer.models.suppression import SoftBounce, Suppression
from mailer.models.system_state import SystemState
from mailer.models.template import Template, TemplateVersion
from mailer.models.webhook_endpoint import WebhookDelivery, WebhookEndpoint
from mailer.models.webhook_message import WebhookMessage

__all__ = [
    "ApiKey",
    "Attachment",
    "Base",
    "Batch",
    "ConsoleSession",
    "DeadLetter",
    "Event",
    "Metric",
    "Recipient",
    "SoftBounce",
    "Suppression",
    "SystemState",
    "Template",
    "TemplateVersion",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookMessage",
]
