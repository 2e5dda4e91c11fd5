"""Pydantic base classes.

Request bodies are documented in snake_case (`template_id`, `send_at`) and accept the
camelCase spelling too (`templateId`); an error names a field as the client spelled it.
Sending both spellings of one field is refused (422 naming both). Responses are camelCase.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from mailer.validation import nul_paths, surrogate_paths

T = TypeVar("T")


def _both_spellings(name: str) -> AliasChoices:
    # The first choice is the name OpenAPI documents and a missing field is reported by.
    return AliasChoices(name, to_camel(name))


DUPLICATE_FIELD = "duplicate_field"


def camel_spellings(model: type[BaseModel]) -> list[tuple[str, str]]:
    """(snake_case, camelCase) of each field of `model` whose two spellings differ."""
    pairs = []
    for field in model.model_fields.values():
        choices = field.validation_alias
        if isinstance(choices, AliasChoices):
            snake, camel = (str(c) for c in choices.choices[:2])
            if snake != camel:
                pairs.append((snake, camel))
    return pairs


# Each request model's (snake_case, camelCase) pairs, filled as the models are defined.
_SPELLINGS: dict[type[BaseModel], list[tuple[str, str]]] = {}


class RequestModel(BaseModel):
    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _SPELLINGS[cls] = camel_spellings(cls)

    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=_both_spellings),
        extra="forbid",
        str_max_length=1_000_000,
    )

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if type(data) is dict and len(data) > 1:
            sent_twice = [
                [snake, camel]
                for snake, camel in _SPELLINGS.get(cls) or ()
                if snake in data and camel in data
            ]
            if sent_twice:
                raise PydanticCustomError(
                    DUPLICATE_FIELD,
                    "{names} name the same field(s): send one spelling",
                    {
                        "names": ", ".join(f"{s} and {c}" for s, c in sent_twice),
                        "fields": sent_twice,
                    },
                )
        return data

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
