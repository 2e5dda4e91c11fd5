"""Jinja2 for the console's pages: autoescaping always on, undefined names an error."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATE_DIR = Path(__file__).parent / "templates"

NAV = (
    ("", "Overview"),
    ("/batches", "Batches"),
    ("/addresses", "Address search"),
    ("/templates", "Templates"),
    ("/suppressions", "Suppressions"),
    ("/dead-letters", "Dead letters"),
    ("/webhooks", "Webhooks"),
    ("/keys", "API keys"),
    ("/domain", "Sending domain"),
)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: int | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


def _percent(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def _json(value: Any) -> str:
    """Pretty JSON as text (escaped by autoescape where it is shown)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


environment = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(when=_when, number=_number, percent=_percent, json=_json)


def render_page(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    base = request.scope.get("root_path", "")
    user = getattr(request.state, "console_user", None)
    full = {
        "base": base,
        "user": user,
        "csrf_token": user.csrf_token if user is not None else "",
        "nav": NAV,
        "here": request.url.path[len(base) :] or "",
        **context,
    }
    html = environment.get_template(name).render(full)
    return HTMLResponse(html, status_code=status_code, headers=headers)


def redirect_to(request: Request, path: str) -> RedirectResponse:
    """A 303 (see other) to `path` inside the console, wherever it is mounted."""
    return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)
