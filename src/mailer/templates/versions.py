"""Rendering a stored template version: what the worker sends and what a preview shows.

Versions are immutable, so their compiled form and parsed variable declarations are cached
by version id. No web framework here: the worker imports this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

import orjson

from mailer.control_chars import has_control_chars
from mailer.errors import ValidationFailed
from mailer.models import TemplateVersion
from mailer.templates.rendering import (
    RenderedMessage,
    TemplateRenderError,
    derive_text,
    get_compiled,
)
from mailer.templates.usage import PROVIDED_VARIABLES, UNSUBSCRIBE_URL, find_variables, used_names
from mailer.templates.variables import (
    VariableSpec,
    apply_defaults,
    check_variables,
    parse_variable_specs,
)


class VersionContent(Protocol):
    """What checking a batch against a version reads of it: a TemplateVersion, or the
    plain row the API's POST path reads without the ORM (batches.repository)."""

    @property
    def id(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def html(self) -> str | None: ...

    @property
    def text(self) -> str | None: ...

    @property
    def text_derived(self) -> bool: ...

    @property
    def variables(self) -> dict[str, Any]: ...


_SPECS: dict[str, dict[str, VariableSpec]] = {}


def version_specs(version: VersionContent) -> dict[str, VariableSpec]:
    """Parsed variable declarations of a version; cached, since versions are immutable."""
    specs = _SPECS.get(version.id)
    if specs is None:
        if len(_SPECS) > 1024:
            _SPECS.clear()
        specs = _SPECS[version.id] = parse_variable_specs(version.variables)
    return specs


_USED: dict[str, list[str]] = {}


def version_row(row: Any) -> VersionContent:
    """A version read as a plain row (columns id, subject, html, text, text_derived and
    variables as JSON text): building the ORM object cost ~12 µs of a POST."""
    return SimpleNamespace(
        id=row["id"],
        subject=row["subject"],
        html=row["html"],
        text=row["text"],
        text_derived=row["text_derived"],
        variables=orjson.loads(row["variables"]),
    )


def remember_used(version_id: str, used: list[str]) -> None:
    if len(_USED) > 1024:
        _USED.clear()
    _USED[version_id] = used


async def used_variables(version: VersionContent) -> list[str]:
    """The variables a version reads (see templates.usage); cached, since versions are
    immutable, and found off the event loop on a miss."""
    used = _USED.get(version.id)
    if used is None:
        text = None if version.text_derived else version.text
        uses = await asyncio.to_thread(find_variables, version.subject, version.html, text)
        used = used_names(uses)
        remember_used(version.id, used)
    return used


def undeclared(version: VersionContent, used: Sequence[str]) -> list[str]:
    """Variables every recipient must give: those a template that declares none reads
    (mailer's own, such as unsubscribe_url, excepted). [] when it declares variables: its
    declarations say what is required."""
    if version_specs(version):
        return []
    return [name for name in used if name not in PROVIDED_VARIABLES]


def render_version(version: TemplateVersion, variables: Mapping[str, Any]) -> RenderedMessage:
    """Render one message from a version: defaults applied, text derived when missing."""
    compiled = get_compiled(
        version.id, subject=version.subject, html=version.html, text=version.text
    )
    values = apply_defaults(version_specs(version), variables)
    rendered = compiled.render(values)
    if rendered.text is None and rendered.html is not None:
        rendered = RenderedMessage(
            subject=rendered.subject, html=rendered.html, text=derive_text(rendered.html)
        )
    return rendered


def preview(
    version: TemplateVersion, variables: Mapping[str, Any], *, unsubscribe_url: str
) -> RenderedMessage:
    problems = check_variables(version_specs(version), variables)
    if problems:
        raise ValidationFailed(
            "Variables do not match the template's declarations.",
            details=[{"field": f"variables.{name}", "message": msg} for name, msg in problems],
        )
    try:
        rendered = render_version(version, {**variables, UNSUBSCRIBE_URL: unsubscribe_url})
    except TemplateRenderError as exc:
        raise ValidationFailed(
            f"Rendering failed: {exc}",
            details=[{"field": exc.part, "message": exc.message}],
            code="render_error",
        ) from None
    if has_control_chars(rendered.subject):
        # A send would refuse this message (delivery.compose): the preview says so too.
        raise ValidationFailed(
            "The rendered subject contains CR, LF or control characters.",
            details=[{"field": "subject", "message": "control characters after rendering"}],
            code="render_error",
        )
    return rendered
