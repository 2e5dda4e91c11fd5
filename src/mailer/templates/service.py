"""Templates: create, version, delete. Versions are immutable; rendering a stored version
(for the worker and the preview endpoint) is in `mailer.templates.versions`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.errors import NotFound, ValidationFailed
from mailer.ids import new_id
from mailer.models import Template, TemplateVersion
from mailer.models.base import utcnow
from mailer.templates import repository
from mailer.templates.rendering import (
    MAX_DERIVE_INPUT_CHARS,
    CompiledTemplate,
    TemplateSyntaxError,
    derive_text,
)
from mailer.templates.usage import (
    PROVIDED_VARIABLES,
    UNSUBSCRIBE_URL,
    VariableUse,
    find_variables,
    used_names,
)
from mailer.templates.variables import VariableSpec, VariableSpecError, parse_variable_specs
from mailer.templates.versions import remember_used


def _derived_text(html: str | None) -> str | None:
    """A text part derived once from the html source, when that still parses as a template
    (html2text keeps {{…}} tags); else None and the text is derived per message."""
    if not html:
        return None
    text = derive_text(html)
    try:
        CompiledTemplate.compile(subject="", html=None, text=text)
    except TemplateSyntaxError:
        return None
    return text


async def _check_source(subject: str, html: str | None, text: str | None) -> None:
    try:
        # Compiling a large template can take long: keep it off the event loop.
        await asyncio.to_thread(CompiledTemplate.compile, subject=subject, html=html, text=text)
    except TemplateSyntaxError as exc:
        raise ValidationFailed(
            f"Template {exc.part} does not parse: {exc}",
            details=[
                {
                    "field": exc.part,
                    "message": exc.message,
                    "line": exc.line,
                    "column": exc.column,
                }
            ],
            code="template_syntax_error",
        ) from None


def _specs(raw: Mapping[str, Any]) -> dict[str, VariableSpec]:
    try:
        specs = parse_variable_specs(raw)
    except VariableSpecError as exc:
        raise ValidationFailed(
            f"Invalid variable declarations: {exc}",
            details=[
                {"field": f"variables.{name}", "message": problem} for name, problem in exc.problems
            ],
        ) from None
    if UNSUBSCRIBE_URL in specs:
        raise ValidationFailed(
            f"{UNSUBSCRIBE_URL} is provided by mailer; do not declare it.",
            details=[
                {
                    "field": f"variables.{UNSUBSCRIBE_URL}",
                    "message": "provided for every message (the one-click unsubscribe URL)",
                }
            ],
        )
    return specs


async def _used_variables(
    subject: str, html: str | None, text: str | None, specs: Mapping[str, VariableSpec]
) -> list[str]:
    """The variables the template reads. A template that declares variables must declare
    every one it reads (422 naming each and where it is used); one that declares none gets
    its recipients checked for them at batch creation instead."""
    uses = await asyncio.to_thread(find_variables, subject, html, text)
    if specs:
        undeclared = [
            use for use in uses if use.name not in specs and use.name not in PROVIDED_VARIABLES
        ]
        if undeclared:
            names = ", ".join(dict.fromkeys(use.name for use in undeclared))
            raise ValidationFailed(
                f"The template uses variables it does not declare: {names}.",
                details=[_undeclared_detail(use) for use in undeclared[:100]],
                code="undeclared_variable",
            )
    return used_names(uses)


def _undeclared_detail(use: VariableUse) -> dict[str, Any]:
    return {
        "field": use.part,
        "variable": use.name,
        "line": use.line,
        "column": use.column,
        "message": f"{use.name} is used ({use.where()}) but not declared in variables",
    }


def specs_dump(specs: Mapping[str, VariableSpec]) -> dict[str, Any]:
    return {name: spec.model_dump(mode="json") for name, spec in specs.items()}


@dataclass(frozen=True, slots=True)
class _Source:
    """A version's content, checked and with its derived parts: everything slow about saving
    a template, done before the save's transaction (on SQLite a transaction holds the write
    lock, so a compile of seconds inside it would hold up every other writer)."""

    name: str
    subject: str
    html: str | None
    text: str | None
    text_derived: bool
    specs: dict[str, VariableSpec]
    used: list[str]


async def _prepare(
    *, name: str, subject: str, html: str | None, text: str | None, variables: Mapping[str, Any]
) -> _Source:
    await _check_source(subject, html, text)
    specs = _specs(variables)
    used = await _used_variables(subject, html, text, specs)
    derived = text is None
    if derived and html and len(html) > MAX_DERIVE_INPUT_CHARS:
        raise ValidationFailed(
            "A template whose html is this long needs a text part.",
            details=[
                {
                    "field": "text",
                    "message": f"required when html is longer than {MAX_DERIVE_INPUT_CHARS:,} "
                    "characters (the text part is derived only from shorter html)",
                }
            ],
        )
    if derived:
        text = await asyncio.to_thread(_derived_text, html)
    return _Source(name, subject, html, text, derived, specs, used)


def _version(template_id: str, number: int, source: _Source) -> TemplateVersion:
    """A new version of `source`, its id set (not yet stored)."""
    version = TemplateVersion(
        id=new_id(),
        template_id=template_id,
        version=number,
        name=source.name,
        subject=source.subject,
        html=source.html,
        text=source.text,
        text_derived=source.text_derived,
        variables=specs_dump(source.specs),
        created_at=utcnow(),
    )
    remember_used(version.id, source.used)
    return version


async def _new_version(
    session: AsyncSession, template: Template, number: int, source: _Source
) -> TemplateVersion:
    version = _version(template.id, number, source)
    session.add(version)
    await session.flush()
    return version


async def create_template(
    session: AsyncSession,
    *,
    name: str,
    subject: str | None,
    html: str | None,
    text: str | None,
    variables: Mapping[str, Any],
) -> tuple[Template, TemplateVersion]:
    source = await _prepare(
        name=name, subject=subject or name, html=html, text=text, variables=variables
    )
    now = utcnow()
    template = Template(name=name, version_count=1, created_at=now, updated_at=now)
    session.add(template)
    await session.flush()
    version = await _new_version(session, template, 1, source)
    template.current_version_id = version.id
    await session.flush()
    return template, version


async def inline_template(
    *, subject: str, html: str | None, text: str | None
) -> tuple[Template, TemplateVersion]:
    """The content of one POST /emails as a template of its own, checked as any template,
    and not yet stored (ids set; the caller inserts both). Inline templates are never
    listed nor usable by id (deleted_at is set at once, so every "live" query skips them);
    their batch renders the version as any other."""
    name = "inline"
    source = await _prepare(name=name, subject=subject, html=html, text=text, variables={})
    now = utcnow()
    template = Template(
        id=new_id(),
        name=name,
        version_count=1,
        created_at=now,
        updated_at=now,
        deleted_at=now,
        inline=True,
    )
    version = _version(template.id, 1, source)
    template.current_version_id = version.id
    return template, version


async def get_template(session: AsyncSession, template_id: str) -> tuple[Template, TemplateVersion]:
    found = await repository.get_live_with_version(session, template_id)
    if found is None:
        raise NotFound(f"Template {template_id!r} does not exist.")
    return found


async def update_template(
    session: AsyncSession, template_id: str, changes: Mapping[str, Any]
) -> tuple[Template, TemplateVersion]:
    # Lock the row first: concurrent updates each need the next version number
    # (PostgreSQL; SQLite transactions are serialized already).
    await session.get(Template, template_id, with_for_update=True, populate_existing=True)
    template, current = await get_template(session, template_id)
    name = changes.get("name") or current.name
    html = changes.get("html", current.html)
    text = changes.get("text", None if current.text_derived else current.text)
    if not html and not text:
        raise ValidationFailed(
            "a template needs 'html' or 'text' (or both)",
            details=[{"field": "html", "message": "html and text cannot both be empty"}],
        )
    subject = changes.get("subject") or current.subject
    variables = changes["variables"] if changes.get("variables") is not None else current.variables
    # The new content depends on the current version, so on SQLite this check runs inside
    # the write transaction (a large template's compile holds other writers up meanwhile).
    source = await _prepare(name=name, subject=subject, html=html, text=text, variables=variables)
    template.version_count += 1
    version = await _new_version(session, template, template.version_count, source)
    template.name = name
    template.current_version_id = version.id
    template.updated_at = version.created_at
    await session.flush()
    return template, version


async def list_templates(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[Sequence[tuple[Template, TemplateVersion]], int]:
    return await repository.list_live(session, limit=limit, offset=offset)


async def delete_template(session: AsyncSession, template_id: str) -> None:
    template = await repository.get_live(session, template_id)
    if template is None:
        raise NotFound(f"Template {template_id!r} does not exist.")
    # Soft delete: batches keep rendering the exact version they were created with.
    template.deleted_at = utcnow()
    await session.flush()
