"""Templates: list, versions, create and edit with a live preview.

The preview renders the form's unsaved source through the templates service, the same
code the worker renders with, and answers an HTML document for a sandboxed iframe."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from mailer.console import repository
from mailer.console.rendering import environment, redirect_to, render_page
from mailer.console.security import PREVIEW_CSP
from mailer.console.site import Db, User, host_state
from mailer.errors import MailerError, validation_details
from mailer.models import TemplateVersion
from mailer.templates import service as templates
from mailer.templates import versions as rendering
from mailer.templates.rendering import TemplateSyntaxError, get_compiled
from mailer.templates.schemas import MAX_TEMPLATE_CHARS, TemplateCreate, TemplateUpdate
from mailer.templates.variables import VariableSpecError

router = APIRouter()
PAGE = 50
VERSIONS = 50
Source = Annotated[str, Form(max_length=MAX_TEMPLATE_CHARS)]


@dataclass
class Draft:
    """What the edit form shows: a version's source, or what the user typed."""

    name: str = ""
    subject: str = ""
    html: str = ""
    text: str = ""
    variables: str = "{}"
    sample: str = "{}"
    errors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, version: TemplateVersion) -> Draft:
        return cls(
            name=version.name,
            subject=version.subject,
            html=version.html or "",
            text="" if version.text_derived else (version.text or ""),
            variables=orjson.dumps(version.variables, option=orjson.OPT_INDENT_2).decode(),
            sample=orjson.dumps(
                _sample_for(version.variables), option=orjson.OPT_INDENT_2
            ).decode(),
        )


def _sample_for(declarations: dict[str, Any]) -> dict[str, Any]:
    sample: dict[str, Any] = {}
    for name, spec in declarations.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        sample[name] = {"number": 1, "boolean": True, "array": [], "object": {}}.get(
            str(kind), f"sample {name}"
        )
    return sample


def _json_object(raw: str, field_name: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError as exc:
        return None, f"{field_name} is not valid JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"{field_name} must be a JSON object"
    return value, None


def _problems(exc: Exception) -> list[dict[str, Any]]:
    if isinstance(exc, TemplateSyntaxError):
        return [{"field": exc.part, "message": exc.message, "line": exc.line, "column": exc.column}]
    if isinstance(exc, ValidationError):
        return [
            {"field": d.get("field", ""), "message": d.get("message", "")}
            for d in validation_details(exc.errors())
        ]
    if isinstance(exc, MailerError):
        return exc.details or [{"field": "", "message": exc.message}]
    if isinstance(exc, VariableSpecError):
        return [{"field": f"variables.{n}", "message": p} for n, p in exc.problems]
    return [{"field": "", "message": str(exc)}]


@router.get("/templates")
async def template_list(
    request: Request,
    session: Db,
    user: User,
    before: Annotated[str | None, Query(max_length=26)] = None,
) -> Response:
    rows = await repository.templates_page(session, before=before, limit=PAGE)
    return render_page(
        request,
        "templates.html",
        {
            "title": "Templates",
            "templates": rows[:PAGE],
            "next_before": rows[PAGE - 1][0].id if len(rows) > PAGE else None,
        },
    )


def _edit_page(
    request: Request,
    draft: Draft,
    *,
    template_id: str | None,
    versions: list[TemplateVersion] | None = None,
    shown_version: int | None = None,
    status: int = 200,
) -> Response:
    return render_page(
        request,
        "template_edit.html",
        {
            "title": "New template" if template_id is None else f"Template {draft.name}",
            "draft": draft,
            "template_id": template_id,
            "versions": versions or [],
            "shown_version": shown_version,
        },
        status_code=status,
    )


@router.get("/templates/new")
async def new_template(request: Request, user: User) -> Response:
    draft = Draft(
        name="",
        subject="Hello {{name}}",
        html="<h1>Hello {{name}}!</h1>",
        variables='{\n  "name": {"type": "string"}\n}',
        sample='{\n  "name": "Ada"\n}',
    )
    return _edit_page(request, draft, template_id=None)


@router.post("/templates/new")
async def create_template(
    request: Request,
    session: Db,
    user: User,
    name: Annotated[str, Form(max_length=200)] = "",
    subject: Annotated[str, Form(max_length=2000)] = "",
    html: Source = "",
    text: Source = "",
    variables: Source = "{}",
    sample: Source = "{}",
) -> Response:
    draft = Draft(name, subject, html, text, variables, sample)
    declared, problem = _json_object(variables, "Variables")
    if problem is not None or declared is None:
        draft.errors = [{"field": "variables", "message": problem}]
        return _edit_page(request, draft, template_id=None, status=422)
    try:
        body = TemplateCreate(
            name=name,
            subject=subject or None,
            html=html or None,
            text=text or None,
            variables=declared,
        )
        template, _ = await templates.create_template(
            session,
            name=body.name,
            subject=body.subject,
            html=body.html,
            text=body.text,
            variables=body.variables,
        )
    except (ValidationError, MailerError) as exc:
        draft.errors = _problems(exc)
        return _edit_page(request, draft, template_id=None, status=422)
    return redirect_to(request, f"/templates/{template.id}")


@router.get("/templates/{template_id}")
async def edit_template(
    request: Request,
    template_id: str,
    session: Db,
    user: User,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    template, current = await templates.get_template(session, template_id)
    shown = current
    if version is not None and version != current.version:
        shown = await repository.template_version(session, template_id, version) or current
    versions = list(await repository.template_versions(session, template_id, limit=VERSIONS))
    return _edit_page(
        request,
        Draft.of(shown),
        template_id=template.id,
        versions=versions,
        shown_version=shown.version,
    )


@router.post("/templates/{template_id}")
async def save_template(
    request: Request,
    template_id: str,
    session: Db,
    user: User,
    name: Annotated[str, Form(max_length=200)] = "",
    subject: Annotated[str, Form(max_length=2000)] = "",
    html: Source = "",
    text: Source = "",
    variables: Source = "{}",
    sample: Source = "{}",
) -> Response:
    _, current = await templates.get_template(session, template_id)
    # Kept before a rollback below expires the loaded rows.
    shown_version = current.version
    draft = Draft(name, subject, html, text, variables, sample)
    declared, problem = _json_object(variables, "Variables")
    try:
        if problem is not None or declared is None:
            raise ValueError(problem)
        changes = TemplateUpdate(
            name=name or None,
            subject=subject or None,
            html=html or None,
            text=text or None,
            variables=declared,
        ).model_dump()
        await templates.update_template(session, template_id, changes)
    except (ValidationError, MailerError, ValueError) as exc:
        await session.rollback()
        draft.errors = _problems(exc)
        versions = list(await repository.template_versions(session, template_id, limit=VERSIONS))
        return _edit_page(
            request,
            draft,
            template_id=template_id,
            versions=versions,
            shown_version=shown_version,
            status=422,
        )
    return redirect_to(request, f"/templates/{template_id}")


def _preview_version(
    subject: str, html: str, text: str, declared: dict[str, Any]
) -> TemplateVersion:
    # An unsaved version named by its content: the compiled-template cache is keyed by id.
    digest = hashlib.sha256(
        orjson.dumps([subject, html, text, declared], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:24]
    return TemplateVersion(
        id=f"preview-{digest}",
        template_id="preview",
        version=0,
        name="preview",
        subject=subject or "(no subject)",
        html=html or None,
        text=text or None,
        text_derived=not text,
        variables=declared,
    )


@router.post("/template-preview")
async def preview(
    request: Request,
    user: User,
    subject: Annotated[str, Form(max_length=2000)] = "",
    html: Source = "",
    text: Source = "",
    variables: Source = "{}",
    sample: Source = "{}",
) -> HTMLResponse:
    context: dict[str, Any] = {"problems": [], "rendered": None}
    declared, problem = _json_object(variables, "Variables")
    values, sample_problem = _json_object(sample, "Sample variables")
    if problem or sample_problem or declared is None or values is None:
        context["problems"] = [{"field": "", "message": p} for p in (problem, sample_problem) if p]
    elif not html and not text:
        context["problems"] = [{"field": "html", "message": "Write some HTML or text."}]
    else:
        version = _preview_version(subject, html, text, declared)
        try:
            get_compiled(version.id, subject=version.subject, html=version.html, text=version.text)
            # {{unsubscribe_url}} shows an example link, as the API's render endpoint does.
            example = f"{host_state(request).settings.public_url}/api/v1/unsubscribe/example-token"
            context["rendered"] = rendering.preview(version, values, unsubscribe_url=example)
        except (TemplateSyntaxError, MailerError, VariableSpecError) as exc:
            context["problems"] = _problems(exc)
    document = environment.get_template("preview.html").render(context)
    return HTMLResponse(
        document,
        headers={"Content-Security-Policy": PREVIEW_CSP, "X-Frame-Options": "SAMEORIGIN"},
    )
