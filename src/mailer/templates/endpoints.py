"""/templates: thin routes over templates.service (and templates.versions for previews)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Response

from mailer.auth.dependencies import SendKey
from mailer.deps import ApiRoute, Paging, Session, State
from mailer.jsonbody import json_body, request_body_doc
from mailer.models import Template, TemplateVersion
from mailer.schemas import PageOut
from mailer.templates import service, versions
from mailer.templates.schemas import (
    RenderedOut,
    RenderRequest,
    TemplateCreate,
    TemplateOut,
    TemplateUpdate,
)

router = APIRouter(prefix="/templates", tags=["templates"], route_class=ApiRoute)

# Bodies are read after the key is checked (see mailer.jsonbody): the key comes first.
CreateBody = Annotated[TemplateCreate, json_body(TemplateCreate)]
UpdateBody = Annotated[TemplateUpdate, json_body(TemplateUpdate)]
RenderBody = Annotated[RenderRequest, json_body(RenderRequest)]


async def _out(template: Template, version: TemplateVersion) -> TemplateOut:
    return TemplateOut(
        id=template.id,
        name=template.name,
        subject=version.subject,
        html=version.html,
        text=None if version.text_derived else version.text,
        variables=version.variables,
        used_variables=await versions.used_variables(version),
        version=version.version,
        version_id=version.id,
        created_at=template.created_at,
        updated_at=template.updated_at,
    )


@router.get("", response_model=PageOut[TemplateOut])
async def list_templates(session: Session, page: Paging, _: SendKey) -> PageOut[TemplateOut]:
    rows, total = await service.list_templates(session, limit=page.limit, offset=page.offset)
    return PageOut[TemplateOut](
        data=[await _out(t, v) for t, v in rows], total=total, limit=page.limit, offset=page.offset
    )


@router.post(
    "", status_code=201, response_model=TemplateOut, openapi_extra=request_body_doc(TemplateCreate)
)
async def create_template(_: SendKey, body: CreateBody, session: Session) -> TemplateOut:
    template, version = await service.create_template(
        session,
        name=body.name,
        subject=body.subject,
        html=body.html,
        text=body.text,
        variables=body.variables,
    )
    return await _out(template, version)


@router.get("/{template_id}", response_model=TemplateOut)
async def get_template(template_id: str, session: Session, _: SendKey) -> TemplateOut:
    return await _out(*await service.get_template(session, template_id))


@router.put(
    "/{template_id}", response_model=TemplateOut, openapi_extra=request_body_doc(TemplateUpdate)
)
async def update_template(
    template_id: str, _: SendKey, body: UpdateBody, session: Session
) -> TemplateOut:
    changes = body.model_dump(exclude_unset=True)
    return await _out(*await service.update_template(session, template_id, changes))


@router.delete("/{template_id}", status_code=204)
async def delete_template(template_id: str, session: Session, _: SendKey) -> Response:
    await service.delete_template(session, template_id)
    return Response(status_code=204)


@router.post(
    "/{template_id}/render",
    response_model=RenderedOut,
    openapi_extra=request_body_doc(RenderRequest),
)
async def render_template(
    template_id: str, _: SendKey, body: RenderBody, session: Session, state: State
) -> RenderedOut:
    """Render with the variables given. {{unsubscribe_url}} shows an example link (a real
    message gets its recipient's own)."""
    version = (await service.get_template(session, template_id))[1]
    example = f"{state.settings.public_url}/api/v1/unsubscribe/example-token"
    # Compiling and rendering a large template take a while: not on the event loop.
    rendered = await asyncio.to_thread(
        versions.preview, version, body.variables, unsubscribe_url=example
    )
    return RenderedOut(subject=rendered.subject, html=rendered.html, text=rendered.text)
