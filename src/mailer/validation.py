"""Input checks shared by every request model and the batch ingest fast path."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64
# Lone UTF-16 surrogates: valid JSON escapes ("\ud800") that no UTF-8 text can hold, so
# they fail later when a response or the database encodes the string.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _paths(value: Any, path: str, bad: Callable[[str], bool], limit: int) -> list[str]:
    found: list[str] = []

    def walk(item: Any, where: str, depth: int) -> None:
        if len(found) >= limit or depth > MAX_DEPTH:
            return
        if isinstance(item, str):
            if bad(item):
                found.append(where or "body")
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and bad(key):
                    found.append(f"{where}.<key>" if where else "<key>")
                walk(child, f"{where}.{key}" if where else str(key), depth + 1)
        elif isinstance(item, list):
            for index, child in enumerate(item):
                walk(child, f"{where}[{index}]", depth + 1)

    walk(value, path, 0)
    return found


def nul_paths(value: Any, path: str = "", *, limit: int = 10) -> list[str]:
    """Paths of strings (values or keys) containing U+0000, which PostgreSQL cannot store."""
    return _paths(value, path, lambda s: "\x00" in s, limit)


def surrogate_paths(value: Any, path: str = "", *, limit: int = 10) -> list[str]:
    """Paths of strings (values or keys) containing a lone surrogate (not valid Unicode)."""
    return _paths(value, path, lambda s: _SURROGATE.search(s) is not None, limit)
