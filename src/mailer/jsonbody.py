"""Decoding JSON request bodies within bounds, and the FastAPI dependency that does it
after the API key is checked.

Two bounds hold for every JSON body:
- nesting: at most MAX_JSON_DEPTH levels (the body's own object or array is level 1).
  Deeper data would only fail later, when the database driver encodes it (orjson stops at
  254 levels, the json module at the recursion limit), after work was done on it.
- density: at most one object or array per BYTES_PER_CONTAINER bytes of body (beyond the
  first FREE_CONTAINERS). Decoding makes a Python object of every value, and an empty
  object costs ~70 bytes of memory for its 3 bytes of JSON (`{},`): without this a 64 MB
  body of `[{},{},…]` took 1.5 GB to decode. Counted on the raw bytes before decoding.

Routes whose body is a Pydantic model take it through `json_body(Model)` instead of
declaring it as a body parameter: FastAPI reads and validates declared bodies before it
solves any dependency, so a request without a key would have its body read and parsed
(and malformed JSON answered 400 instead of 401). A dependency runs in the order of the
route's parameters: put the key parameter first.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import orjson
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from mailer.errors import BadRequest, PayloadTooLarge, ValidationFailed

MAX_JSON_DEPTH = 32
TOO_DEEP = f"nested deeper than {MAX_JSON_DEPTH} levels"
BYTES_PER_CONTAINER = 16
FREE_CONTAINERS = 1024
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Dotted path components shown when naming where a body nests too deeply.
_PATH_SHOWN = 6

M = TypeVar("M", bound=BaseModel)

# Models taken with json_body(); their schemas are added to the OpenAPI document.
DOCUMENTED_MODELS: list[type[BaseModel]] = []


def loads(body: bytes, *, check_nesting: bool = True) -> Any:
    """The decoded body, or 413 (too many containers for its size), 400 (not JSON), 422
    (nested deeper than MAX_JSON_DEPTH, naming where). `check_nesting=False` leaves the
    walk over the decoded data to a caller that knows the body's shape (the batch ingest
    walks only what may nest: the full walk costs most of a decode)."""
    containers = body.count(b"{") + body.count(b"[")
    budget = FREE_CONTAINERS + len(body) // BYTES_PER_CONTAINER
    if containers > budget:
        # Braces inside strings (a template's "{{name}}") are no containers: count again
        # without the strings, which costs a pass of the regex engine, only here.
        bare = _JSON_STRING.sub(b"", body)
        containers = bare.count(b"{") + bare.count(b"[")
    if containers > budget:
        raise PayloadTooLarge(
            f"The request body holds too many JSON objects and arrays for its size "
            f"(at most one per {BYTES_PER_CONTAINER} bytes).",
            code="payload_too_large",
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise _too_deep("body") from None
        raise BadRequest(
            f"The request body is not valid JSON: {exc}", code="malformed_json"
        ) from None
    if check_nesting and containers > MAX_JSON_DEPTH:  # fewer cannot nest that deep
        check_depth(data)
    return data


def check_depth(data: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """422 naming the field when `data` nests deeper than `limit` levels."""
    if exceeds_depth(data, limit):
        raise _too_deep(deep_path(data, limit) or "body")


def exceeds_depth(value: Any, limit: int) -> bool:
    """Whether `value` nests deeper than `limit` levels (itself being level 1)."""
    if type(value) is not dict and type(value) is not list:
        return False
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        for child in item.values() if type(item) is dict else item:
            kind = type(child)
            if kind is dict or kind is list:
                if depth >= limit:
                    return True
                push((child, depth + 1))
    return False


def deep_path(value: Any, limit: int, prefix: str = "") -> str | None:
    """The path to the first container nested deeper than `limit` (only called once
    exceeds_depth found one, so the recursion stays within `limit` levels)."""

    def walk(item: Any, parts: list[str], depth: int) -> list[str] | None:
        children = item.items() if type(item) is dict else enumerate(item)
        for key, child in children:
            if type(child) is dict or type(child) is list:
                path = [*parts, f"[{key}]" if type(key) is int else str(key)]
                if depth >= limit:
                    return path
                found = walk(child, path, depth + 1)
                if found is not None:
                    return found
        return None

    parts = walk(value, [prefix] if prefix else [], 1)
    if not parts:
        return None
    shown = "".join(p if p.startswith("[") else f".{p}" for p in parts[:_PATH_SHOWN])
    return shown.lstrip(".") + ("…" if len(parts) > _PATH_SHOWN else "")


def _too_deep(field: str) -> ValidationFailed:
    return ValidationFailed(
        f"The request body nests deeper than {MAX_JSON_DEPTH} levels ({field}).",
        details=[{"field": field, "message": TOO_DEEP}],
        code="too_deeply_nested",
    )


def json_body(model: type[M], *, optional: bool = False) -> Any:
    """A dependency giving the request body validated as `model` (None for an empty body
    when `optional`). Validation errors answer 422 like a declared body's would."""
    DOCUMENTED_MODELS.append(model)

    async def dependency(request: Request) -> M | None:
        body = await request.body()
        if optional and not body.strip():
            return None
        data = loads(body)
        if optional and data is None:
            return None
        return validated(model, data)

    return Depends(dependency)


async def read_body(request: Request, model: type[M]) -> M:
    """The request body validated as `model`, for a route that reads it in its body (after
    checking the key itself) rather than through `json_body`; document it with
    `request_body_doc`."""
    return validated(model, loads(await request.body()))


def validated(model: type[M], data: Any) -> M:
    """`data` as `model`; a validation error answers 422 like a declared body's would."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=data) from None


def request_body_doc(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """openapi_extra for a route taking `model` through json_body() or read_body()."""
    if model not in DOCUMENTED_MODELS:
        DOCUMENTED_MODELS.append(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}
