from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from mailer.schemas import RequestModel, ResponseModel

ScopeName = Literal["send", "admin"]


def _default_scopes() -> list[ScopeName]:
    return ["send"]


class KeyCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[ScopeName] = Field(default_factory=_default_scopes, max_length=10)
    admin: bool = False

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(c) < 32 for c in value):
            raise ValueError("must not contain control characters")
        return value.strip() or "unnamed"

    @property
    def is_admin(self) -> bool:
        return self.admin or "admin" in self.scopes


class KeyOut(ResponseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    usage_count: int
    revoked_at: datetime | None

    @field_validator("scopes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return value.split(",") if isinstance(value, str) else value


class KeyCreated(ResponseModel):
    id: str
    key: str = Field(description="The API key. Shown only once: store it now.")
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
