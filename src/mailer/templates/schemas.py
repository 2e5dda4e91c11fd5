from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from mailer.control_chars import has_control_chars
from mailer.schemas import RequestModel, ResponseModel

MAX_TEMPLATE_CHARS = 1_000_000


def _header_safe(value: str | None) -> str | None:
    """The subject (and the name, the default subject) become a header: no CR, LF or other
    control characters, which every message would otherwise fail on."""
    if value is not None and has_control_chars(value):
        raise ValueError("must not contain CR, LF or control characters")
    return value


class TemplateCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    subject: str | None = Field(None, max_length=2000, description="defaults to the name")
    html: str | None = Field(None, max_length=MAX_TEMPLATE_CHARS)
    text: str | None = Field(None, max_length=MAX_TEMPLATE_CHARS)
    variables: dict[str, Any] = Field(default_factory=dict)

    _header_fields = field_validator("name", "subject")(_header_safe)

    @model_validator(mode="after")
    def _needs_body(self) -> TemplateCreate:
        if not self.html and not self.text:
            raise ValueError("a template needs 'html' or 'text' (or both)")
        return self


class TemplateUpdate(RequestModel):
    """A new version. Fields left out keep their current value."""

    name: str | None = Field(None, min_length=1, max_length=200)
    subject: str | None = Field(None, max_length=2000)
    html: str | None = Field(None, max_length=MAX_TEMPLATE_CHARS)
    text: str | None = Field(None, max_length=MAX_TEMPLATE_CHARS)
    variables: dict[str, Any] | None = None

    _header_fields = field_validator("name", "subject")(_header_safe)


class RenderRequest(RequestModel):
    variables: dict[str, Any] = Field(default_factory=dict)


class RenderedOut(ResponseModel):
    subject: str
    html: str | None
    text: str | None


class TemplateOut(ResponseModel):
    id: str
    name: str
    subject: str
    html: str | None
    text: str | None
    variables: dict[str, Any]
    used_variables: list[str] = Field(
        description="variables the template reads (top-level names); when it declares "
        "none, a batch's recipients must give each of these (or the batch sets "
        "allow_missing_variables)"
    )
    version: int
    version_id: str
    created_at: datetime
    updated_at: datetime
