"""Declared template variables: name -> {type, required (default true), default}.

Types are JSON types. Checks use exact Python types of JSON-decoded data: a bool is not a
number or an integer, `integer` accepts int only (not 3.0), `number` accepts int and finite
float. A variable that is missing or null is fine when it is optional or has a default.
Variables a template does not declare are allowed and passed through.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError, model_validator

from mailer.templates.rendering import HELPERS

__all__ = [
    "VariableSpec",
    "VariableSpecError",
    "VariableType",
    "apply_defaults",
    "check_variables",
    "json_type_name",
    "parse_variable_specs",
]

VariableType = Literal["string", "number", "integer", "boolean", "object", "array"]

NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME_LENGTH: Final = 100
# Names `{{name}}` cannot reach: the helpers and Handlebars keywords.
RESERVED_NAMES: Final = HELPERS | {"this", "else", "true", "false", "null", "undefined"}


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))


_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "string": lambda value: type(value) is str,
    "number": _is_number,
    "integer": lambda value: type(value) is int,
    "boolean": lambda value: type(value) is bool,
    "object": lambda value: type(value) is dict,
    "array": lambda value: type(value) is list or type(value) is tuple,
}
_EXPECTED: Final = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
}
_JSON_NAMES: Final[dict[type, str]] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    tuple: "array",
    dict: "object",
}
_MISSING: Final = object()


def json_type_name(value: Any) -> str:
    if type(value) is float and not math.isfinite(value):
        return "a non-finite number"
    return _JSON_NAMES.get(type(value), type(value).__name__)


class VariableSpec(BaseModel):
    """One declared variable. `default` None means no default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: VariableType
    required: StrictBool = True
    default: Any = None
    description: StrictStr | None = None

    @model_validator(mode="after")
    def _default_matches_type(self) -> VariableSpec:
        if self.default is not None and not _CHECKS[self.type](self.default):
            raise ValueError(
                f"default must be {_EXPECTED[self.type]} (got {json_type_name(self.default)})"
            )
        return self


class VariableSpecError(ValueError):
    """Invalid declarations; `problems` is a list of (variable name, problem)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in problems))
        self.problems = problems


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return "name must match [A-Za-z_][A-Za-z0-9_]*"
    if len(name) > MAX_NAME_LENGTH:
        return f"name longer than {MAX_NAME_LENGTH} characters"
    if name in RESERVED_NAMES:
        return f"{name!r} is reserved in Handlebars"
    return None


def _validation_messages(exc: ValidationError) -> str:
    messages = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        messages.append(f"{where}: {message}" if where else message)
    return ", ".join(messages)


def parse_variable_specs(raw: Mapping[str, Any]) -> dict[str, VariableSpec]:
    """Validate declarations such as {"name": {"type": "string"}}.

    Raises VariableSpecError (a ValueError) naming every bad variable."""
    if not isinstance(raw, Mapping):
        raise VariableSpecError([("variables", "must be an object of name -> declaration")])
    specs: dict[str, VariableSpec] = {}
    problems: list[tuple[str, str]] = []
    for name, declaration in raw.items():
        problem = _name_problem(name)
        if problem is not None:
            problems.append((str(name), problem))
            continue
        if isinstance(declaration, VariableSpec):
            specs[name] = declaration
            continue
        if not isinstance(declaration, Mapping):
            problems.append((name, 'must be an object such as {"type": "string"}'))
            continue
        try:
            specs[name] = VariableSpec.model_validate(dict(declaration))
        except ValidationError as exc:
            problems.append((name, _validation_messages(exc)))
    if problems:
        raise VariableSpecError(problems)
    return specs


def check_variables(
    specs: Mapping[str, VariableSpec], values: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """Problems of one recipient's values as (variable name, problem); [] when fine."""
    problems: list[tuple[str, str]] = []
    for name, spec in specs.items():
        value = values.get(name, _MISSING)
        if value is _MISSING or value is None:
            if spec.required and spec.default is None:
                problems.append((name, "is required"))
        elif not _CHECKS[spec.type](value):
            problems.append((name, f"must be {_EXPECTED[spec.type]} (got {json_type_name(value)})"))
    return problems


def apply_defaults(specs: Mapping[str, VariableSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of values with the defaults of missing (or null) variables filled in."""
    result = dict(values)
    for name, spec in specs.items():
        default = spec.default
        if default is not None and result.get(name) is None:
            result[name] = copy.deepcopy(default) if type(default) in (dict, list) else default
    return result
