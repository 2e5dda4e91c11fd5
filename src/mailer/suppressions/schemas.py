from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

from mailer.models.enums import SuppressionReason
from mailer.schemas import RequestModel, ResponseModel


class SuppressionOut(ResponseModel):
    email: str
    reason: str
    source: dict[str, Any]
    created_at: datetime


class SuppressionCreate(RequestModel):
    """One address (`email`) or a list (`emails`)."""

    email: str | None = Field(None, max_length=320)
    emails: list[str] | None = Field(None, max_length=100_000)
    reason: SuppressionReason = SuppressionReason.MANUAL
    note: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _one_of(self) -> SuppressionCreate:
        if not self.email and not self.emails:
            raise ValueError("give 'email' or 'emails'")
        return self

    @property
    def addresses(self) -> list[str]:
        return ([self.email] if self.email else []) + list(self.emails or [])


class SuppressionAdded(ResponseModel):
    added: int
    requested: int
