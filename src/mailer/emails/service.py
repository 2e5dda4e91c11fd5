"""POST /emails: one email (or up to 50 addresses) stored as a batch of the transactional
lane, so that the worker sends it as any batch (claim, compose, send, record).

The batch has priority "high" (its own queue, served before bulk work), no List-Unsubscribe
unless asked, and ignores unsubscribe-only suppressions unless `respect_unsubscribe`.
Inline content becomes an inline template (templates.service.inline_template: checked as any
template, never listed); attachments are rows of their own.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.addresses import InvalidAddress, normalize_email
from mailer.auth.principal import Principal
from mailer.batches import repository as batches_repository
from mailer.batches import service as batches
from mailer.batches.dispatch import enqueue_after_commit
from mailer.control_chars import has_control_chars
from mailer.db import pg
from mailer.emails import repository
from mailer.emails.schemas import (
    MAX_ADDRESSES,
    MAX_ATTACHMENT_BYTES,
    MAX_HEADERS,
    EmailCreate,
)
from mailer.errors import Conflict, ValidationFailed
from mailer.models import Batch, Template, TemplateVersion
from mailer.models.base import utcnow
from mailer.models.enums import (
    BatchPriority,
    BatchStatus,
    EventType,
    RecipientStatus,
    SuppressionReason,
)
from mailer.queue.base import JobQueue
from mailer.templates import service as templates
from mailer.templates.usage import UNSUBSCRIBE_URL
from mailer.templates.variables import check_variables
from mailer.templates.versions import VersionContent, undeclared, used_variables, version_specs
from mailer.transports.base import MailAttachment
from mailer.transports.mime import CONTENT_TYPE, RESERVED_HEADERS
from mailer.webhook_endpoints import outbox

QUEUED = "QUEUED"
# Custom header names: letters, digits and '-' (no leading '-').
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,75}")
# Headers mailer writes (mime.RESERVED_HEADERS) and others a client may not set.
FORBIDDEN_HEADERS = RESERVED_HEADERS | {
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "sender",
    "return-path",
    "received",
    "mime-version",
    "content-disposition",
    "x-ses-configuration-set",
    "x-ses-source-arn",
    "x-ses-from-arn",
    "x-ses-return-path-arn",
}
_BAD_FILENAME = re.compile(r'["\\/]')


@dataclass(slots=True)
class CreateResult:
    response: dict[str, Any]
    replayed: bool


def _fail(field: str, message: str, summary: str | None = None, **extra: Any) -> ValidationFailed:
    return ValidationFailed(
        summary or f"'{field}' {message}.", details=[{"field": field, "message": message, **extra}]
    )


def _addresses(to: str | list[str]) -> list[str]:
    """Normal forms, duplicates removed (first one kept); 422 naming to[i]."""
    single = isinstance(to, str)
    items = [to] if isinstance(to, str) else to
    if not items:
        raise _fail("to", "must name at least one address")
    if len(items) > MAX_ADDRESSES:
        raise _fail("to", f"at most {MAX_ADDRESSES} addresses; got {len(items)}")
    out: dict[str, None] = {}
    problems = []
    for i, item in enumerate(items):
        field = "to" if single else f"to[{i}]"
        try:
            out[normalize_email(item)] = None
        except InvalidAddress as exc:
            problems.append({"field": field, "message": f"invalid address: {exc}"})
    if problems:
        raise ValidationFailed("Invalid address(es) in 'to'.", details=problems)
    return list(out)


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise _fail("headers", f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        field = f"headers.{name}"
        if not HEADER_NAME.fullmatch(name):
            raise _fail(field, "header names are 1-76 letters, digits and '-'")
        lower = name.lower()
        if lower in FORBIDDEN_HEADERS or lower.startswith(("content-", "dkim-", "arc-")):
            raise _fail(field, "mailer writes this header; it cannot be set", type="forbidden")
        if lower in seen:
            raise _fail(field, "given twice (names are case-insensitive)")
        seen.add(lower)
        if has_control_chars(value):
            raise _fail(field, "must not contain CR, LF or control characters")
        if len(name) + 2 + len(value) > 998:
            raise _fail(field, "header line longer than 998 characters")
    return headers


def decode_attachments(body: EmailCreate) -> list[MailAttachment]:
    out: list[MailAttachment] = []
    total = 0
    for i, item in enumerate(body.attachments):
        field = f"attachments[{i}]"
        if has_control_chars(item.filename) or _BAD_FILENAME.search(item.filename):
            raise _fail(f"{field}.filename", "must not contain control characters, quotes, / or \\")
        if not CONTENT_TYPE.fullmatch(item.content_type):
            raise _fail(f"{field}.content_type", "must be a MIME type such as application/pdf")
        try:
            content = base64.b64decode("".join(item.content.split()), validate=True)
        except (binascii.Error, ValueError):
            raise _fail(f"{field}.content", "is not valid base64") from None
        total += len(content)
        if total > MAX_ATTACHMENT_BYTES:
            raise _fail(
                "attachments", f"at most {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB decoded in all"
            )
        out.append(MailAttachment(item.filename, item.content_type.lower(), content))
    return out


async def _inline_content(body: EmailCreate) -> tuple[Template, TemplateVersion] | None:
    """The inline template of inline content, checked and not yet stored; None when the
    email names a template."""
    inline = body.html is not None or body.text is not None
    if inline and body.template_id is not None:
        raise _fail("template_id", "give either template_id or html/text, not both")
    if not inline and body.template_id is None:
        raise _fail(
            "html",
            "missing content: give html and/or text (with subject), or template_id",
            "The email has no content.",
        )
    if body.template_id is not None:
        if body.subject is not None:
            raise _fail("subject", "the template has its subject; give subject only with html/text")
        return None
    if not body.subject:
        raise _fail("subject", "required with html/text")
    if not (body.html or body.text):
        raise _fail("html", "html and text cannot both be empty")
    if has_control_chars(body.subject):
        raise _fail("subject", "must not contain CR, LF or control characters")
    return await templates.inline_template(subject=body.subject, html=body.html, text=body.text)


async def _check_variables(body: EmailCreate, version: VersionContent) -> None:
    used = await used_variables(version)
    if UNSUBSCRIBE_URL in used and not body.unsubscribe:
        raise _fail(
            "unsubscribe",
            "the content places {{unsubscribe_url}}: unsubscribe must be true",
            type="unsubscribe_required",
        )
    problems = [
        {"field": f"variables.{name}", "message": problem}
        for name, problem in check_variables(version_specs(version), body.variables)
    ]
    problems.extend(
        {"field": f"variables.{name}", "message": "is missing"}
        for name in undeclared(version, used)
        if body.variables.get(name) is None
    )
    if problems:
        raise ValidationFailed("The variables do not fit the template.", details=problems)


async def create_emails(
    session: AsyncSession,
    principal: Principal | None,
    body: EmailCreate,
    *,
    body_hash: str,
    idempotency_key: str | None,
    chunk_size: int,
    queue: JobQueue,
) -> CreateResult:
    """Store the messages (202's answer); their chunk is enqueued once the session commits.
    `principal` None: sent by the command line (no key, no Idempotency-Key)."""
    if idempotency_key is not None and principal is not None:
        if not idempotency_key.strip():
            raise _fail("header:Idempotency-Key", "must not be blank")
        replayed = await batches.replay_or_conflict(session, principal, idempotency_key, body_hash)
        if replayed is not None:
            return CreateResult(replayed, replayed=True)

    addresses = _addresses(body.to)
    from_address = batches.check_sender(body.from_, "from") if body.from_ else None
    reply_to_raw = [body.reply_to] if isinstance(body.reply_to, str) else body.reply_to or []
    reply_to = [batches.check_sender(r, f"reply_to[{i}]") for i, r in enumerate(reply_to_raw)]
    headers = check_headers(body.headers)
    files = decode_attachments(body)
    inline = await _inline_content(body)
    ignored = () if body.respect_unsubscribe else (SuppressionReason.UNSUBSCRIBE,)
    context = await repository.email_context(session, body.template_id, addresses, ignored)
    version: VersionContent
    if inline is not None:
        template_id, version = inline[0].id, inline[1]
    elif context.version is None:
        raise _fail("template_id", "no template with this id", type="not_found")
    else:
        template_id, version = str(body.template_id), context.version
    await _check_variables(body, version)

    held = context.suppressed
    now = utcnow()
    scheduled = body.send_at is not None and body.send_at > now
    rows = [(address, body.variables) for address in addresses]
    queued = len(rows) - len(held)
    batch = Batch.new(
        scheduled=scheduled,
        now=now,
        template_id=template_id,
        template_version_id=version.id,
        metadata_=body.metadata,
        tags=body.tags,
        send_at=body.send_at,
        from_address=from_address,
        reply_to=reply_to,
        unsubscribe=body.unsubscribe,
        priority=BatchPriority.HIGH,
        respect_unsubscribe=body.respect_unsubscribe,
        headers=headers,
        api_key_id=principal.key_id if principal else None,
        idempotency_key=idempotency_key if principal else None,
        request_hash=body_hash if idempotency_key and principal else None,
        total_recipients=len(rows),
        duplicate_count=0,
        suppressed_count=len(held),
        chunk_size=chunk_size,
    )
    if queued == 0:
        batch.status = BatchStatus.COMPLETED
        batch.completed_at = now
    events: list[tuple[str | None, str, dict[str, Any]]] = [
        (
            None,
            EventType.QUEUED,
            {"recipients": queued, "scheduled": scheduled, "inline": inline is not None},
        )
    ]
    events.extend(
        (email, EventType.SUPPRESSED, {"reason": "on suppression list", "seq": seq})
        for seq, (email, _) in enumerate(rows)
        if email in held
    )
    if context.ids is not None:
        # The ids are known before the insert (PostgreSQL): the answer, stored for
        # Idempotency-Key replays, is written with the batch, in its one statement.
        batch.response = _answer(rows, held, context.ids)
    try:
        ids = await repository.insert_emails(
            session, batch, rows, held, events, inline, context.ids
        )
    except batches_repository.DuplicateBatch:
        raise Conflict(
            "A request with this Idempotency-Key is in progress or done; retry to get its "
            "response.",
            code="idempotency_conflict",
        ) from None
    if files:
        await repository.add_attachments(session, batch.id, files)
    response = _answer(rows, held, ids)
    if context.ids is None:
        await repository.save_response(session, batch.id, response)
    if not scheduled and queued:
        jobs = batches.chunk_jobs(batch.id, len(rows), chunk_size, high=True)
        enqueue_after_commit(session, queue, jobs)
    return CreateResult(response, replayed=False)


def _answer(
    rows: Sequence[tuple[str, Any]], held: AbstractSet[str], ids: Sequence[int]
) -> dict[str, Any]:
    """The 202's body: each address's message id and whether it was queued."""
    return {
        "data": [
            {
                "id": str(ids[seq]),
                "to": email,
                "status": RecipientStatus.SUPPRESSED if email in held else QUEUED,
            }
            for seq, (email, _) in enumerate(rows)
        ]
    }


async def writes_in_one_statement(
    session: AsyncSession, body: EmailCreate, pool: pg.DriverPool | None
) -> None:
    """Called by the API on its request session before `create_emails`: without
    attachments (a second insert) and webhook endpoints (outbox rows), new emails are
    written by one statement after reads only, so on PostgreSQL the session runs without
    BEGIN/COMMIT (see batches.service.writes_in_one_statement)."""
    if not body.attachments and not await outbox.any_enabled(session):
        await batches.one_statement(session, pool)
