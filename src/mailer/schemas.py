"""Pydantic base classes: requests accept snake_case and camelCase, responses are camelCase."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

T = TypeVar("T")


class RequestModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_max_length=1_000_000
    )


class ResponseModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class PageOut(ResponseModel, Generic[T]):
    data: list[T]
    total: int
    limit: int
    offset: int
