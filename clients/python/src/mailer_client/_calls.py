"""Every API call as data: method, path, query, body, how to read the answer, and whether it
may be resent. The sync and async clients send these; neither knows a path or a field."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from mailer_client import models as m

T = TypeVar("T")
API = "/api/v1"


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    json: Any = None
    # Safe to send again when the server may already have acted on it (a lost answer, a 5xx).
    # Calls that are not are retried only when the server certainly did not act: 429 and
    # connection failures before the request was sent.
    idempotent: bool = True
    # Sent as the Idempotency-Key header: one per logical call, the same on each retry.
    idempotency_key: str | None = None
    # Statuses answered as a result rather than raised (GET /ready's 503 "not_ready").
    accept: frozenset[int] = field(default_factory=frozenset)


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


# --- encoding --------------------------------------------------------------------------


def _wire(value: Any) -> Any:
    """A query value or body value as the API takes it: datetimes as ISO 8601 (UTC as Z)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() == UTC.utcoffset(None):
            return value.replace(tzinfo=None).isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, Mapping):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def _query(**values: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = str(_wire(value))
    return out


def _body(**values: Any) -> dict[str, Any]:
    """A JSON body of the values given (None: left out, the server's default applies)."""
    return {name: _wire(value) for name, value in values.items() if value is not None}


def _seg(value: str) -> str:
    """A path segment, percent-encoded (an email address, an id)."""
    return quote(value, safe="")


# --- reading answers -------------------------------------------------------------------


def _reader(tp: Any) -> Callable[[httpx.Response], Any]:
    adapter: TypeAdapter[Any] = TypeAdapter(tp)

    def parse(response: httpx.Response) -> Any:
        return adapter.validate_json(response.content)

    return parse


def _model(tp: type[T]) -> Callable[[httpx.Response], T]:
    return _reader(tp)


def _none(response: httpx.Response) -> None:
    return None


def _replayed(response: httpx.Response) -> bool:
    return str(response.headers.get("idempotent-replayed", "")).lower() == "true"


def _batch_created(response: httpx.Response) -> m.BatchCreated:
    created = m.BatchCreated.model_validate_json(response.content)
    return created.model_copy(update={"replayed": _replayed(response)})


def _emails_sent(response: httpx.Response) -> m.EmailsSent:
    sent = m.EmailsSent.model_validate_json(response.content)
    return sent.model_copy(update={"replayed": _replayed(response)})


# --- health ----------------------------------------------------------------------------


def health() -> Call[m.Health]:
    return Call("GET", f"{API}/health", _model(m.Health))


def ready() -> Call[m.Readiness]:
    return Call("GET", f"{API}/ready", _model(m.Readiness), accept=frozenset({503}))


# --- templates -------------------------------------------------------------------------


def templates_list(limit: int, offset: int) -> Call[m.Page[m.Template]]:
    return Call(
        "GET",
        f"{API}/templates",
        _model(m.Page[m.Template]),
        params=_query(limit=limit, offset=offset),
    )


def templates_get(template_id: str) -> Call[m.Template]:
    return Call("GET", f"{API}/templates/{_seg(template_id)}", _model(m.Template))


def templates_create(
    *,
    name: str,
    subject: str | None,
    html: str | None,
    text: str | None,
    variables: Mapping[str, Any] | None,
) -> Call[m.Template]:
    body = _body(name=name, subject=subject, html=html, text=text, variables=variables)
    return Call("POST", f"{API}/templates", _model(m.Template), json=body, idempotent=False)


def templates_update(
    template_id: str,
    *,
    name: str | None,
    subject: str | None,
    html: str | None,
    text: str | None,
    variables: Mapping[str, Any] | None,
) -> Call[m.Template]:
    # Each PUT makes a new version: not resent after a possible success.
    body = _body(name=name, subject=subject, html=html, text=text, variables=variables)
    return Call(
        "PUT",
        f"{API}/templates/{_seg(template_id)}",
        _model(m.Template),
        json=body,
        idempotent=False,
    )


def templates_delete(template_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/templates/{_seg(template_id)}", _none, idempotent=False)


def templates_render(
    template_id: str, variables: Mapping[str, Any] | None
) -> Call[m.RenderedTemplate]:
    return Call(
        "POST",
        f"{API}/templates/{_seg(template_id)}/render",
        _model(m.RenderedTemplate),
        json=_body(variables=variables or {}),
    )


# --- batches ---------------------------------------------------------------------------


def batches_create(
    *,
    template_id: str,
    recipients: Sequence[m.Recipient | Mapping[str, Any]],
    metadata: Mapping[str, Any] | None,
    send_at: datetime | str | None,
    from_: str | None,
    reply_to: str | Sequence[str] | None,
    tags: Mapping[str, str] | None,
    unsubscribe: bool | None,
    allow_missing_variables: bool | None,
    priority: str | None,
    idempotency_key: str | None,
) -> Call[m.BatchCreated]:
    items = [r if isinstance(r, m.Recipient) else m.Recipient.model_validate(r) for r in recipients]
    body = _body(
        template_id=template_id,
        recipients=[r.model_dump(mode="json") for r in items],
        metadata=metadata,
        send_at=send_at,
        reply_to=reply_to,
        tags=tags,
        unsubscribe=unsubscribe,
        allow_missing_variables=allow_missing_variables,
        priority=priority,
    )
    if from_ is not None:
        body["from"] = from_
    return Call(
        "POST",
        f"{API}/batches",
        _batch_created,
        json=body,
        idempotency_key=idempotency_key or new_idempotency_key(),
    )


def batches_get(batch_id: str) -> Call[m.Batch]:
    return Call("GET", f"{API}/batches/{_seg(batch_id)}", _model(m.Batch))


def batches_list(limit: int, offset: int, status: str | None) -> Call[m.Page[m.Batch]]:
    return Call(
        "GET",
        f"{API}/batches",
        _model(m.Page[m.Batch]),
        params=_query(limit=limit, offset=offset, status=status),
    )


def batches_summary(batch_id: str) -> Call[m.BatchSummary]:
    return Call("GET", f"{API}/batches/{_seg(batch_id)}/summary", _model(m.BatchSummary))


def batches_cancel(batch_id: str) -> Call[m.Batch]:
    # A second cancel is a 409 (already CANCELLED): not resent after a possible success.
    return Call("POST", f"{API}/batches/{_seg(batch_id)}/cancel", _model(m.Batch), idempotent=False)


def batches_events(
    batch_id: str, limit: int, offset: int, type: str | None, email: str | None
) -> Call[m.Page[m.Event]]:
    return Call(
        "GET",
        f"{API}/batches/{_seg(batch_id)}/events",
        _model(m.Page[m.Event]),
        params=_query(limit=limit, offset=offset, type=type, email=email),
    )


# --- single emails ---------------------------------------------------------------------


def emails_send(
    *,
    to: str | Sequence[str],
    subject: str | None,
    html: str | None,
    text: str | None,
    template_id: str | None,
    variables: Mapping[str, Any] | None,
    from_: str | None,
    reply_to: str | Sequence[str] | None,
    headers: Mapping[str, str] | None,
    tags: Mapping[str, str] | None,
    metadata: Mapping[str, Any] | None,
    send_at: datetime | str | None,
    attachments: Sequence[m.Attachment | Mapping[str, Any]] | None,
    unsubscribe: bool | None,
    respect_unsubscribe: bool | None,
    idempotency_key: str | None,
) -> Call[m.EmailsSent]:
    files = None
    if attachments is not None:
        files = [
            a if isinstance(a, m.Attachment) else m.Attachment.model_validate(a)
            for a in attachments
        ]
    body = _body(
        to=to if isinstance(to, str) else list(to),
        subject=subject,
        html=html,
        text=text,
        template_id=template_id,
        variables=variables,
        reply_to=reply_to if reply_to is None or isinstance(reply_to, str) else list(reply_to),
        headers=headers,
        tags=tags,
        metadata=metadata,
        send_at=send_at,
        attachments=files,
        unsubscribe=unsubscribe,
        respect_unsubscribe=respect_unsubscribe,
    )
    if from_ is not None:
        body["from"] = from_
    return Call(
        "POST",
        f"{API}/emails",
        _emails_sent,
        json=body,
        idempotency_key=idempotency_key or new_idempotency_key(),
    )


def emails_get(email_id: str) -> Call[m.Email]:
    return Call("GET", f"{API}/emails/{_seg(email_id)}", _model(m.Email))


def emails_list(
    *,
    limit: int | None,
    cursor: str | None,
    to: str | None,
    status: str | None,
    batch_id: str | None,
    tag: str | None,
    since: datetime | str | None,
) -> Call[m.CursorPage[m.Email]]:
    return Call(
        "GET",
        f"{API}/emails",
        _model(m.CursorPage[m.Email]),
        params=_query(
            limit=limit,
            cursor=cursor,
            to=to,
            status=status,
            batch_id=batch_id,
            tag=tag,
            since=since,
        ),
    )


# --- API keys --------------------------------------------------------------------------


def keys_create(name: str, admin: bool, scopes: Sequence[str] | None) -> Call[m.CreatedApiKey]:
    body = _body(name=name, admin=admin or None, scopes=list(scopes) if scopes else None)
    return Call("POST", f"{API}/admin/keys", _model(m.CreatedApiKey), json=body, idempotent=False)


def keys_list(limit: int, offset: int) -> Call[m.Page[m.ApiKey]]:
    return Call(
        "GET",
        f"{API}/admin/keys",
        _model(m.Page[m.ApiKey]),
        params=_query(limit=limit, offset=offset),
    )


def keys_revoke(key_id: str) -> Call[m.ApiKey]:
    return Call("POST", f"{API}/admin/keys/{_seg(key_id)}/revoke", _model(m.ApiKey))


# --- suppressions ----------------------------------------------------------------------


def suppressions_list(
    limit: int, offset: int, reason: str | None, search: str | None
) -> Call[m.Page[m.Suppression]]:
    return Call(
        "GET",
        f"{API}/admin/suppressions",
        _model(m.Page[m.Suppression]),
        params=_query(limit=limit, offset=offset, reason=reason, search=search),
    )


def suppressions_add(
    emails: Sequence[str], reason: str | None, note: str | None
) -> Call[m.SuppressionsAdded]:
    body = _body(emails=list(emails), reason=reason, note=note)
    return Call("POST", f"{API}/admin/suppressions", _model(m.SuppressionsAdded), json=body)


def suppressions_remove(email: str) -> Call[None]:
    return Call("DELETE", f"{API}/admin/suppressions/{_seg(email)}", _none, idempotent=False)


# --- dead letters ----------------------------------------------------------------------


def dead_letters_list(limit: int, offset: int, batch_id: str | None) -> Call[m.Page[m.DeadLetter]]:
    return Call(
        "GET",
        f"{API}/admin/dead-letters",
        _model(m.Page[m.DeadLetter]),
        params=_query(limit=limit, offset=offset, batch_id=batch_id),
    )


def dead_letters_retry(ids: Sequence[int] | None) -> Call[m.DeadLettersRetried]:
    body = _body(ids=list(ids) if ids is not None else None)
    return Call("POST", f"{API}/admin/dead-letters/retry", _model(m.DeadLettersRetried), json=body)


def dead_letters_purge(before: datetime | str | None) -> Call[m.DeadLettersPurged]:
    return Call(
        "DELETE",
        f"{API}/admin/dead-letters",
        _model(m.DeadLettersPurged),
        params=_query(before=before),
    )


# --- sending, domains, metrics ---------------------------------------------------------


def sending_state() -> Call[m.SendingState]:
    return Call("GET", f"{API}/admin/sending", _model(m.SendingState))


def sending_pause(reason: str | None) -> Call[m.SendingState]:
    return Call(
        "POST", f"{API}/admin/sending/pause", _model(m.SendingState), json=_body(reason=reason)
    )


def sending_resume() -> Call[m.SendingState]:
    return Call("POST", f"{API}/admin/sending/resume", _model(m.SendingState))


def domains_check(domain: str, selector: str | None) -> Call[m.DomainReport]:
    return Call(
        "GET",
        f"{API}/admin/domains/{_seg(domain)}/check",
        _model(m.DomainReport),
        params=_query(selector=selector),
    )


def metrics_summary() -> Call[m.MetricsSummary]:
    return Call("GET", f"{API}/metrics", _model(m.MetricsSummary))


def metrics_admin(hours: int | None) -> Call[m.AdminMetrics]:
    return Call("GET", f"{API}/admin/metrics", _model(m.AdminMetrics), params=_query(hours=hours))


# --- outbound webhook endpoints --------------------------------------------------------

_HOOKS = f"{API}/webhook-endpoints"


def webhook_endpoints_create(
    url: str, events: Sequence[str] | None, description: str | None, enabled: bool | None
) -> Call[m.CreatedWebhookEndpoint]:
    body = _body(
        url=url,
        events=list(events) if events is not None else None,
        description=description,
        enabled=enabled,
    )
    return Call("POST", _HOOKS, _model(m.CreatedWebhookEndpoint), json=body, idempotent=False)


def webhook_endpoints_list(limit: int, offset: int) -> Call[m.Page[m.WebhookEndpoint]]:
    return Call(
        "GET", _HOOKS, _model(m.Page[m.WebhookEndpoint]), params=_query(limit=limit, offset=offset)
    )


def webhook_endpoints_get(endpoint_id: str) -> Call[m.WebhookEndpoint]:
    return Call("GET", f"{_HOOKS}/{_seg(endpoint_id)}", _model(m.WebhookEndpoint))


def webhook_endpoints_update(
    endpoint_id: str,
    url: str | None,
    events: Sequence[str] | None,
    description: str | None,
    enabled: bool | None,
) -> Call[m.WebhookEndpoint]:
    body = _body(
        url=url,
        events=list(events) if events is not None else None,
        description=description,
        enabled=enabled,
    )
    return Call("PATCH", f"{_HOOKS}/{_seg(endpoint_id)}", _model(m.WebhookEndpoint), json=body)


def webhook_endpoints_delete(endpoint_id: str) -> Call[None]:
    return Call("DELETE", f"{_HOOKS}/{_seg(endpoint_id)}", _none, idempotent=False)


def webhook_endpoints_rotate_secret(endpoint_id: str) -> Call[m.WebhookSecret]:
    return Call(
        "POST",
        f"{_HOOKS}/{_seg(endpoint_id)}/rotate-secret",
        _model(m.WebhookSecret),
        idempotent=False,
    )


def webhook_endpoints_test(endpoint_id: str) -> Call[m.WebhookTestResult]:
    return Call(
        "POST",
        f"{_HOOKS}/{_seg(endpoint_id)}/test",
        _model(m.WebhookTestResult),
        idempotent=False,
    )


def webhook_endpoints_deliveries(
    endpoint_id: str, limit: int | None, cursor: str | None
) -> Call[m.CursorPage[m.WebhookDelivery]]:
    return Call(
        "GET",
        f"{_HOOKS}/{_seg(endpoint_id)}/deliveries",
        _model(m.CursorPage[m.WebhookDelivery]),
        params=_query(limit=limit, cursor=cursor),
    )


def webhook_endpoints_replay(endpoint_id: str, delivery_id: int) -> Call[m.WebhookDelivery]:
    return Call(
        "POST",
        f"{_HOOKS}/{_seg(endpoint_id)}/deliveries/{delivery_id}/replay",
        _model(m.WebhookDelivery),
        idempotent=False,
    )


def webhook_endpoints_replay_failed(
    endpoint_id: str, since: datetime | str
) -> Call[m.WebhookDeliveriesReplayed]:
    return Call(
        "POST",
        f"{_HOOKS}/{_seg(endpoint_id)}/deliveries/replay-failed",
        _model(m.WebhookDeliveriesReplayed),
        json=_body(since=since),
        idempotent=False,
    )
