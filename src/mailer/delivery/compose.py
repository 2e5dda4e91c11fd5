"""Turning a recipient of a batch into an OutgoingMessage: render, check headers, add
Message-ID, List-Unsubscribe (RFC 8058) and tags."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from mailer.config import Settings
from mailer.control_chars import has_control_chars
from mailer.models import Batch, TemplateVersion
from mailer.models.enums import BatchPriority, SuppressionReason
from mailer.templates.rendering import TemplateRenderError, peek_compiled
from mailer.templates.usage import UNSUBSCRIBE_URL
from mailer.templates.versions import render_version
from mailer.transports.base import MailAttachment, OutgoingMessage
from mailer.unsubscribe.tokens import make_token

MAX_SUBJECT_CHARS = 998


class InvalidContent(ValueError):
    """The rendered message cannot be sent (bad header value, render failure): permanent."""


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What every message of a batch shares; built once per batch in a worker."""

    batch_id: str
    version: TemplateVersion
    from_addr: str
    message_domain: str
    reply_to: tuple[str, ...]
    tags: Mapping[str, str]
    unsubscribe: bool
    status: str
    headers: Mapping[str, str] = field(default_factory=dict)  # the batch's extra headers
    attachments: tuple[MailAttachment, ...] = ()
    high_priority: bool = False  # the transactional lane (see delivery/lanes.py)
    # Suppression reasons that do not hold this batch's mail back (transactional mail
    # ignores unsubscribes unless asked otherwise).
    ignored_suppressions: tuple[str, ...] = ()
    # The version's compiled template is small and complete (no text derived per message):
    # its messages render on the event loop. Otherwise they render on a thread.
    render_inline: bool = False


def batch_context(
    batch: Batch,
    version: TemplateVersion,
    settings: Settings,
    *,
    render_inline: bool = False,
    attachments: tuple[MailAttachment, ...] = (),
) -> BatchContext:
    from_addr = batch.from_address or settings.mail_from
    domain = parseaddr(from_addr)[1].rpartition("@")[2] or "localhost"
    tags = {**batch.tags, "mailer_batch": batch.id}
    return BatchContext(
        batch_id=batch.id,
        version=version,
        from_addr=from_addr,
        message_domain=domain,
        reply_to=tuple(batch.reply_to or ()),
        tags=tags,
        unsubscribe=batch.unsubscribe,
        status=batch.status,
        headers=dict(batch.headers or {}),
        attachments=attachments,
        high_priority=batch.priority == BatchPriority.HIGH,
        ignored_suppressions=() if batch.respect_unsubscribe else (SuppressionReason.UNSUBSCRIBE,),
        render_inline=render_inline,
    )


def unsubscribe_url(recipient_id: int, settings: Settings) -> str:
    """The one-click URL: in the List-Unsubscribe header and as {{unsubscribe_url}}."""
    token = make_token(recipient_id, settings.unsubscribe_key)
    return f"{settings.public_url}/api/v1/unsubscribe/{token}"


def unsubscribe_headers(
    recipient_id: int, settings: Settings, url: str | None = None
) -> dict[str, str]:
    url = url or unsubscribe_url(recipient_id, settings)
    targets = [f"<{url}>"]
    if settings.unsubscribe_mailto:
        token = url.rpartition("/")[2]
        targets.append(f"<mailto:{settings.unsubscribe_mailto}?subject=unsubscribe-{token}>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


async def compose_message(
    ctx: BatchContext,
    recipient_id: int,
    email: str,
    variables: Mapping[str, Any],
    settings: Settings,
) -> OutgoingMessage:
    """compose(), on a thread unless the batch's template renders quickly and is compiled
    already, so that a large template (compile, render, text derivation) does not hold up
    the event loop: the API (embedded) and the other sends keep going meanwhile."""
    if ctx.render_inline and peek_compiled(ctx.version.id) is not None:
        return compose(ctx, recipient_id, email, variables, settings)
    return await asyncio.to_thread(compose, ctx, recipient_id, email, variables, settings)


def compose(
    ctx: BatchContext,
    recipient_id: int,
    email: str,
    variables: Mapping[str, Any],
    settings: Settings,
) -> OutgoingMessage:
    url = unsubscribe_url(recipient_id, settings) if ctx.unsubscribe else None
    if url is not None:
        # Provided by mailer, whatever the recipient's variables say.
        variables = {**variables, UNSUBSCRIBE_URL: url}
    try:
        rendered = render_version(ctx.version, variables)
    except TemplateRenderError as exc:
        raise InvalidContent(f"render failed: {exc}") from None
    subject = rendered.subject
    if has_control_chars(subject):
        raise InvalidContent("subject contains CR, LF or control characters after rendering")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise InvalidContent(f"subject longer than {MAX_SUBJECT_CHARS} characters")
    headers = dict(ctx.headers)
    if url is not None:
        headers.update(unsubscribe_headers(recipient_id, settings, url))
    return OutgoingMessage(
        message_id=f"<{uuid.uuid4().hex}@{ctx.message_domain}>",
        from_addr=ctx.from_addr,
        to=email,
        subject=subject,
        html=rendered.html,
        text=rendered.text,
        reply_to=ctx.reply_to,
        headers=headers,
        tags={**ctx.tags, "mailer_recipient": str(recipient_id)},
        attachments=ctx.attachments,
    )
