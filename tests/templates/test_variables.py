"""Declared template variables: parsing declarations, checking and completing values."""

from __future__ import annotations

from typing import Any

import pytest

from mailer.templates.variables import (
    VariableSpec,
    VariableSpecError,
    apply_defaults,
    check_variables,
    parse_variable_specs,
)


def test_original_spec_example_is_accepted() -> None:
    specs = parse_variable_specs({"name": {"type": "string"}})
    assert specs == {"name": VariableSpec(type="string", required=True, default=None)}
    assert specs["name"].model_dump(mode="json") == {
        "type": "string",
        "required": True,
        "default": None,
        "description": None,
    }


def test_full_declarations_round_trip() -> None:
    raw = {
        "name": {"type": "string", "required": True},
        "age": {"type": "integer", "required": False},
        "score": {"type": "number", "default": 1.5},
        "vip": {"type": "boolean", "default": False, "description": "VIP customer"},
        "address": {"type": "object", "default": {"city": "Paris"}},
        "items": {"type": "array", "default": []},
        "_private2": {"type": "string"},
    }
    specs = parse_variable_specs(raw)
    assert set(specs) == set(raw)
    assert specs["vip"].default is False
    dumped = {name: spec.model_dump(mode="json") for name, spec in specs.items()}
    assert parse_variable_specs(dumped) == specs
    assert parse_variable_specs({}) == {}
    assert parse_variable_specs(specs) == specs  # already parsed specs pass through


@pytest.mark.parametrize(
    ("raw", "name", "problem"),
    [
        ({"my-var": {"type": "string"}}, "my-var", "name must match"),
        ({"1abc": {"type": "string"}}, "1abc", "name must match"),
        ({"": {"type": "string"}}, "", "name must match"),
        ({"a.b": {"type": "string"}}, "a.b", "name must match"),
        ({"é": {"type": "string"}}, "é", "name must match"),
        ({"x" * 101: {"type": "string"}}, "x" * 101, "longer than 100"),
        ({"each": {"type": "string"}}, "each", "reserved"),
        ({"this": {"type": "string"}}, "this", "reserved"),
        ({"x": {"type": "int"}}, "x", "type: Input should be 'string'"),
        ({"x": {}}, "x", "type: Field required"),
        ({"x": "string"}, "x", "must be an object"),
        ({"x": {"type": "string", "requried": False}}, "x", "requried: Extra inputs"),
        ({"x": {"type": "string", "required": "no"}}, "x", "required: Input should be a valid"),
        ({"x": {"type": "string", "required": 1}}, "x", "required: Input should be a valid"),
        (
            {"x": {"type": "integer", "default": "3"}},
            "x",
            "default must be an integer (got string)",
        ),
        (
            {"x": {"type": "integer", "default": 3.0}},
            "x",
            "default must be an integer (got number)",
        ),
        ({"x": {"type": "integer", "default": True}}, "x", "must be an integer (got boolean)"),
        ({"x": {"type": "number", "default": False}}, "x", "must be a number (got boolean)"),
        ({"x": {"type": "array", "default": {}}}, "x", "must be an array (got object)"),
        ({"x": {"type": "object", "default": []}}, "x", "must be an object (got array)"),
    ],
)
def test_bad_declarations_are_rejected_by_name(
    raw: dict[str, Any], name: str, problem: str
) -> None:
    with pytest.raises(VariableSpecError) as info:
        parse_variable_specs(raw)
    assert len(info.value.problems) == 1
    bad_name, message = info.value.problems[0]
    assert bad_name == name
    assert problem in message
    assert isinstance(info.value, ValueError)
    assert name in str(info.value)


def test_every_bad_declaration_is_listed() -> None:
    raw = {"ok": {"type": "string"}, "bad-1": {"type": "string"}, "bad2": {"type": "nope"}}
    with pytest.raises(ValueError, match=r"bad-1: .*; bad2: ") as info:
        parse_variable_specs(raw)
    assert isinstance(info.value, VariableSpecError)
    assert [name for name, _ in info.value.problems] == ["bad-1", "bad2"]


def test_declarations_must_be_an_object() -> None:
    with pytest.raises(VariableSpecError):
        parse_variable_specs(["name"])  # type: ignore[arg-type]


SPECS = parse_variable_specs(
    {
        "name": {"type": "string"},
        "age": {"type": "integer", "required": False},
        "score": {"type": "number"},
        "vip": {"type": "boolean", "default": False},
        "address": {"type": "object", "required": False},
        "tags": {"type": "array", "required": False},
    }
)
VALID = {"name": "Ann", "score": 2}


def test_valid_values_have_no_problems() -> None:
    assert check_variables(SPECS, VALID) == []
    full = {**VALID, "age": 3, "score": 2.5, "vip": True, "address": {}, "tags": [1]}
    assert check_variables(SPECS, full) == []
    assert check_variables(SPECS, {**VALID, "undeclared": object()}) == []
    assert check_variables({}, {"anything": 1}) == []


@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        ({"name": None}, [("name", "is required")]),
        ({"score": None, "name": None}, [("name", "is required"), ("score", "is required")]),
        ({"name": 3}, [("name", "must be a string (got integer)")]),
        ({"age": 3.0}, [("age", "must be an integer (got number)")]),
        ({"age": True}, [("age", "must be an integer (got boolean)")]),
        ({"age": "3"}, [("age", "must be an integer (got string)")]),
        ({"score": True}, [("score", "must be a number (got boolean)")]),
        ({"score": "1"}, [("score", "must be a number (got string)")]),
        ({"score": float("nan")}, [("score", "must be a number (got a non-finite number)")]),
        ({"score": float("inf")}, [("score", "must be a number (got a non-finite number)")]),
        ({"vip": 1}, [("vip", "must be a boolean (got integer)")]),
        ({"vip": "true"}, [("vip", "must be a boolean (got string)")]),
        ({"address": []}, [("address", "must be an object (got array)")]),
        ({"address": "x"}, [("address", "must be an object (got string)")]),
        ({"tags": {}}, [("tags", "must be an array (got object)")]),
        ({"tags": "a,b"}, [("tags", "must be an array (got string)")]),
    ],
)
def test_problems_name_the_variable(
    changes: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    values = {key: value for key, value in {**VALID, **changes}.items() if value is not None}
    assert check_variables(SPECS, values) == problems


def test_optional_and_defaulted_variables_may_be_missing_or_null() -> None:
    assert check_variables(SPECS, {**VALID, "age": None, "vip": None, "tags": None}) == []


def test_apply_defaults_fills_missing_and_null_only() -> None:
    specs = parse_variable_specs(
        {
            "name": {"type": "string", "default": "friend"},
            "vip": {"type": "boolean", "default": False},
            "address": {"type": "object", "default": {"city": "Paris"}},
            "age": {"type": "integer", "required": False},
        }
    )
    values = {"name": None, "extra": 1}
    filled = apply_defaults(specs, values)
    assert filled == {"name": "friend", "vip": False, "address": {"city": "Paris"}, "extra": 1}
    assert values == {"name": None, "extra": 1}  # the input is not modified
    assert apply_defaults(specs, {"name": "Ann", "vip": True}) == {
        "name": "Ann",
        "vip": True,
        "address": {"city": "Paris"},
    }
    filled["address"]["city"] = "changed"
    assert specs["address"].default == {"city": "Paris"}  # defaults are not shared


def test_specs_are_immutable() -> None:
    spec = VariableSpec(type="string")
    with pytest.raises(ValueError, match="frozen"):
        spec.required = False  # type: ignore[misc]
