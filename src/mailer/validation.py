"""Input checks shared by every request model and the batch ingest fast path."""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


def nul_paths(value: Any, path: str = "", *, limit: int = 10) -> list[str]:
    """Paths of strings (values or keys) containing U+0000, which PostgreSQL cannot store."""
    found: list[str] = []

    def walk(item: Any, where: str, depth: int) -> None:
        if len(found) >= limit or depth > MAX_DEPTH:
            return
        if isinstance(item, str):
            if "\x00" in item:
                found.append(where or "body")
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    found.append(f"{where}.<key>" if where else "<key>")
                walk(child, f"{where}.{key}" if where else str(key), depth + 1)
        elif isinstance(item, list):
            for index, child in enumerate(item):
                walk(child, f"{where}[{index}]", depth + 1)

    walk(value, path, 0)
    return found
