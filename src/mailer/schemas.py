"""Pydantic base classes: requests accept snake_case and camelCase, responses are camelCase."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

from mailer.validation import nul_paths, surrogate_paths

T = TypeVar("T")


class RequestModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_max_length=1_000_000
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        paths = nul_paths(data)
        if paths:
            raise ValueError(f"NUL characters (\\u0000) are not allowed (in {', '.join(paths)})")
        paths = surrogate_paths(data)
        if paths:
            raise ValueError(f"lone surrogates are not valid Unicode (in {', '.join(paths)})")
        return data


class ResponseModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class PageOut(ResponseModel, Generic[T]):
    data: list[T]
    total: int
    limit: int
    offset: int
