"""The API routes of an app with their full paths.

FastAPI keeps an included router nested (its routes carry the path without the prefix);
this walks them as requests see them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import compile_path


def api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) of every API route."""
    for route in app.router.routes:
        if isinstance(route, APIRoute):
            yield route.path, route
            continue
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is None:
            continue
        for context in contexts():
            original = context.original_route
            if isinstance(original, APIRoute):
                yield context.path, original


@cache
def _path_regex(path: str) -> re.Pattern[str]:
    return compile_path(path)[0]


def methods_at(app: FastAPI, path: str) -> set[str]:
    """Every method some route takes at this request path."""
    methods: set[str] = set()
    for full_path, route in api_routes(app):
        if _path_regex(full_path).match(path):
            methods |= route.methods or set()
    return methods
