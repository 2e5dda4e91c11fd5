"""The asyncio client. `_sync_client.py` is generated from this file by
`scripts/unasync.py`: edit this one, then run the script."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import pydantic

from mailer_client import _calls as calls
from mailer_client import models as m
from mailer_client._version import __version__
from mailer_client.errors import (
    MailerConnectionError,
    UnexpectedResponseError,
    error_from_response,
)
from mailer_client.retry import RetryPolicy

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:3000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_PAGE_SIZE = 100
FINAL_BATCH_STATUSES = frozenset({"COMPLETED", "CANCELLED"})
UNSENT_EMAIL_STATUSES = frozenset({"QUEUED", "SCHEDULED", "PENDING", "SENDING", "RETRYING"})


def _base_url(url: str | None) -> str:
    url = (url or os.environ.get("MAILER_URL") or DEFAULT_URL).rstrip("/")
    return url.removesuffix("/api/v1")


def _parse(call: calls.Call[T], response: httpx.Response) -> T:
    try:
        return call.parse(response)
    except pydantic.ValidationError as exc:
        raise UnexpectedResponseError(
            f"{call.method} {call.path}: the {response.status_code} answer is not the "
            f"expected shape: {exc}",
            response.status_code,
            response.text[:2000],
        ) from exc


class AsyncMailerClient:
    """A client of one mailer server.

    `base_url` is the server's root (`http://127.0.0.1:3000`; default `$MAILER_URL`),
    `api_key` a key (default `$MAILER_API_KEY`). Calls that fail with 429, 5xx or a
    connection error are sent again as `retry` allows. Close it (`async with`, or `aclose()`)
    when done, unless you passed your own `http_client`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("MAILER_API_KEY")
        sent_headers = {"User-Agent": f"mailer-client-python/{__version__}"}
        if key:
            sent_headers["Authorization"] = f"Bearer {key}"
        sent_headers.update(headers or {})
        self.base_url = _base_url(base_url)
        self.retry = retry or RetryPolicy()
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._headers = sent_headers
        self._sleep = sleep
        self.templates = AsyncTemplates(self)
        self.batches = AsyncBatches(self)
        self.emails = AsyncEmails(self)
        self.keys = AsyncKeys(self)
        self.suppressions = AsyncSuppressions(self)
        self.dead_letters = AsyncDeadLetters(self)
        self.sending = AsyncSending(self)
        self.domains = AsyncDomains(self)
        self.metrics = AsyncMetrics(self)
        self.webhook_endpoints = AsyncWebhookEndpoints(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def send(self, call: calls.Call[T]) -> T:
        """Send one call, resending it as the retry policy allows (with the same
        Idempotency-Key each time); its result, or the error of the last attempt."""
        headers = dict(self._headers)
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        url = self.base_url + call.path
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
                    call.method, url, params=call.params, json=call.json, headers=headers
                )
            except httpx.TransportError as exc:
                wait = self.retry.retry_after_error(exc, attempt, call.idempotent)
                if wait is None:
                    raise MailerConnectionError(
                        f"{call.method} {url} failed after {attempt} attempt(s): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                await self._sleep(wait)
                continue
            if response.status_code < 400 or response.status_code in call.accept:
                return _parse(call, response)
            wait = self.retry.retry_after_status(response, attempt, call.idempotent)
            if wait is None:
                raise error_from_response(response)
            await self._sleep(wait)

    async def iter_offset(
        self, page: Callable[[int, int], calls.Call[m.Page[T]]], page_size: int
    ) -> AsyncIterator[T]:
        """Every item of an offset-paginated list, fetching `page_size` at a time."""
        offset = 0
        while True:
            result = await self.send(page(page_size, offset))
            for item in result.data:
                yield item
            offset += len(result.data)
            if not result.data or offset >= result.total:
                return

    async def iter_cursor(
        self, page: Callable[[str | None], calls.Call[m.CursorPage[T]]]
    ) -> AsyncIterator[T]:
        """Every item of a cursor-paginated list, following `next_cursor`."""
        cursor: str | None = None
        while True:
            result = await self.send(page(cursor))
            for item in result.data:
                yield item
            if not result.next_cursor or not result.data:
                return
            cursor = result.next_cursor

    async def health(self) -> m.Health:
        """Liveness (no key needed)."""
        return await self.send(calls.health())

    async def ready(self) -> m.Readiness:
        """Readiness: database, migrations, queue. Answered, not raised, when not ready."""
        return await self.send(calls.ready())


class _Resource:
    def __init__(self, client: AsyncMailerClient) -> None:
        self._c = client


class AsyncTemplates(_Resource):
    async def list(self, *, limit: int = DEFAULT_PAGE_SIZE, offset: int = 0) -> m.Page[m.Template]:
        return await self._c.send(calls.templates_list(limit, offset))

    def iter(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[m.Template]:
        return self._c.iter_offset(calls.templates_list, page_size)

    async def get(self, template_id: str) -> m.Template:
        return await self._c.send(calls.templates_get(template_id))

    async def create(
        self,
        name: str,
        *,
        subject: str | None = None,
        html: str | None = None,
        text: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> m.Template:
        return await self._c.send(
            calls.templates_create(
                name=name, subject=subject, html=html, text=text, variables=variables
            )
        )

    async def update(
        self,
        template_id: str,
        *,
        name: str | None = None,
        subject: str | None = None,
        html: str | None = None,
        text: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> m.Template:
        """A new version; fields left out keep their value."""
        return await self._c.send(
            calls.templates_update(
                template_id, name=name, subject=subject, html=html, text=text, variables=variables
            )
        )

    async def delete(self, template_id: str) -> None:
        await self._c.send(calls.templates_delete(template_id))

    async def render(
        self, template_id: str, variables: Mapping[str, Any] | None = None
    ) -> m.RenderedTemplate:
        """Preview: the subject, html and text rendered with these variables."""
        return await self._c.send(calls.templates_render(template_id, variables))


class AsyncBatches(_Resource):
    async def create(
        self,
        template_id: str,
        recipients: Sequence[m.Recipient | Mapping[str, Any]],
        *,
        metadata: Mapping[str, Any] | None = None,
        send_at: datetime | str | None = None,
        from_: str | None = None,
        reply_to: str | Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        unsubscribe: bool | None = None,
        allow_missing_variables: bool | None = None,
        priority: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.BatchCreated:
        """Send a batch. An Idempotency-Key (yours, or a new one) is sent with it and reused
        on retries, so a retried request never makes a second batch."""
        return await self._c.send(
            calls.batches_create(
                template_id=template_id,
                recipients=recipients,
                metadata=metadata,
                send_at=send_at,
                from_=from_,
                reply_to=reply_to,
                tags=tags,
                unsubscribe=unsubscribe,
                allow_missing_variables=allow_missing_variables,
                priority=priority,
                idempotency_key=idempotency_key,
            )
        )

    async def get(self, batch_id: str) -> m.Batch:
        return await self._c.send(calls.batches_get(batch_id))

    async def list(
        self, *, status: str | None = None, limit: int = DEFAULT_PAGE_SIZE, offset: int = 0
    ) -> m.Page[m.Batch]:
        return await self._c.send(calls.batches_list(limit, offset, status))

    def iter(
        self, *, status: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[m.Batch]:
        return self._c.iter_offset(
            lambda limit, offset: calls.batches_list(limit, offset, status), page_size
        )

    async def summary(self, batch_id: str) -> m.BatchSummary:
        return await self._c.send(calls.batches_summary(batch_id))

    async def wait(
        self, batch_id: str, *, poll_interval: float = 1.0, timeout: float | None = None
    ) -> m.Batch:
        """Poll the batch until it is COMPLETED or CANCELLED; it then. TimeoutError after
        `timeout` seconds (None: no limit). A SCHEDULED batch is waited for too."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = await self._c.send(calls.batches_get(batch_id))
            if batch.status in FINAL_BATCH_STATUSES:
                return batch
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"batch {batch_id} is still {batch.status} after {timeout} s")
            await self._c._sleep(poll_interval)

    async def cancel(self, batch_id: str) -> m.Batch:
        return await self._c.send(calls.batches_cancel(batch_id))

    async def events(
        self,
        batch_id: str,
        *,
        type: str | None = None,
        email: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        offset: int = 0,
    ) -> m.Page[m.Event]:
        """The batch's events, optionally of one type (`BOUNCE`, or the status it leads to,
        `BOUNCED`) or for one address."""
        return await self._c.send(calls.batches_events(batch_id, limit, offset, type, email))

    def iter_events(
        self,
        batch_id: str,
        *,
        type: str | None = None,
        email: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncIterator[m.Event]:
        return self._c.iter_offset(
            lambda limit, offset: calls.batches_events(batch_id, limit, offset, type, email),
            page_size,
        )


class AsyncEmails(_Resource):
    async def send(
        self,
        to: str | Sequence[str],
        *,
        subject: str | None = None,
        html: str | None = None,
        text: str | None = None,
        template_id: str | None = None,
        variables: Mapping[str, Any] | None = None,
        from_: str | None = None,
        reply_to: str | Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        send_at: datetime | str | None = None,
        attachments: Sequence[m.Attachment | Mapping[str, Any]] | None = None,
        unsubscribe: bool | None = None,
        respect_unsubscribe: bool | None = None,
        idempotency_key: str | None = None,
    ) -> m.EmailsSent:
        """Send one email (to one address, or each of at most 50): inline `html`/`text`, or
        `template_id` + `variables`. Retried with one Idempotency-Key, like batches."""
        return await self._c.send(
            calls.emails_send(
                to=to,
                subject=subject,
                html=html,
                text=text,
                template_id=template_id,
                variables=variables,
                from_=from_,
                reply_to=reply_to,
                headers=headers,
                tags=tags,
                metadata=metadata,
                send_at=send_at,
                attachments=attachments,
                unsubscribe=unsubscribe,
                respect_unsubscribe=respect_unsubscribe,
                idempotency_key=idempotency_key,
            )
        )

    async def get(self, email_id: str) -> m.Email:
        """One message with its events (a single email or a batch recipient)."""
        return await self._c.send(calls.emails_get(email_id))

    async def wait(
        self, email_id: str, *, poll_interval: float = 1.0, timeout: float | None = None
    ) -> m.Email:
        """Poll the message until the provider took it or it ended otherwise (SENT,
        DELIVERED, FAILED, SUPPRESSED, ...); it then. TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            email = await self._c.send(calls.emails_get(email_id))
            if email.status not in UNSENT_EMAIL_STATUSES:
                return email
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"email {email_id} is still {email.status} after {timeout} s")
            await self._c._sleep(poll_interval)

    async def list(
        self,
        *,
        to: str | None = None,
        status: str | None = None,
        batch_id: str | None = None,
        tag: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> m.CursorPage[m.Email]:
        """One page of messages; `tag` is `name:value`. Pass `next_cursor` as `cursor`."""
        return await self._c.send(
            calls.emails_list(
                limit=limit,
                cursor=cursor,
                to=to,
                status=status,
                batch_id=batch_id,
                tag=tag,
                since=since,
            )
        )

    def iter(
        self,
        *,
        to: str | None = None,
        status: str | None = None,
        batch_id: str | None = None,
        tag: str | None = None,
        since: datetime | str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[m.Email]:
        return self._c.iter_cursor(
            lambda cursor: calls.emails_list(
                limit=page_size,
                cursor=cursor,
                to=to,
                status=status,
                batch_id=batch_id,
                tag=tag,
                since=since,
            )
        )


class AsyncKeys(_Resource):
    async def create(
        self, name: str, *, admin: bool = False, scopes: Sequence[str] | None = None
    ) -> m.CreatedApiKey:
        """A new API key; its secret (`.key`) is shown this once."""
        return await self._c.send(calls.keys_create(name, admin, scopes))

    async def list(self, *, limit: int = DEFAULT_PAGE_SIZE, offset: int = 0) -> m.Page[m.ApiKey]:
        return await self._c.send(calls.keys_list(limit, offset))

    def iter(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[m.ApiKey]:
        return self._c.iter_offset(calls.keys_list, page_size)

    async def revoke(self, key_id: str) -> m.ApiKey:
        return await self._c.send(calls.keys_revoke(key_id))


class AsyncSuppressions(_Resource):
    async def list(
        self,
        *,
        reason: str | None = None,
        search: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        offset: int = 0,
    ) -> m.Page[m.Suppression]:
        return await self._c.send(calls.suppressions_list(limit, offset, reason, search))

    def iter(
        self,
        *,
        reason: str | None = None,
        search: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncIterator[m.Suppression]:
        return self._c.iter_offset(
            lambda limit, offset: calls.suppressions_list(limit, offset, reason, search),
            page_size,
        )

    async def add(
        self,
        emails: str | Sequence[str],
        *,
        reason: str | None = None,
        note: str | None = None,
    ) -> m.SuppressionsAdded:
        addresses = [emails] if isinstance(emails, str) else emails
        return await self._c.send(calls.suppressions_add(addresses, reason, note))

    async def remove(self, email: str) -> None:
        await self._c.send(calls.suppressions_remove(email))


class AsyncDeadLetters(_Resource):
    async def list(
        self, *, batch_id: str | None = None, limit: int = DEFAULT_PAGE_SIZE, offset: int = 0
    ) -> m.Page[m.DeadLetter]:
        return await self._c.send(calls.dead_letters_list(limit, offset, batch_id))

    def iter(
        self, *, batch_id: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[m.DeadLetter]:
        return self._c.iter_offset(
            lambda limit, offset: calls.dead_letters_list(limit, offset, batch_id), page_size
        )

    async def retry(self, ids: Sequence[int] | None = None) -> m.DeadLettersRetried:
        """Queue these dead letters' recipients again (all of them when `ids` is None)."""
        return await self._c.send(calls.dead_letters_retry(ids))

    async def purge(self, *, before: datetime | str | None = None) -> m.DeadLettersPurged:
        return await self._c.send(calls.dead_letters_purge(before))


class AsyncSending(_Resource):
    async def status(self) -> m.SendingState:
        return await self._c.send(calls.sending_state())

    async def pause(self, reason: str | None = None) -> m.SendingState:
        return await self._c.send(calls.sending_pause(reason))

    async def resume(self) -> m.SendingState:
        return await self._c.send(calls.sending_resume())


class AsyncDomains(_Resource):
    async def check(self, domain: str, *, selector: str | None = None) -> m.DomainReport:
        """SPF, DKIM, DMARC and MX checks of a sending domain."""
        return await self._c.send(calls.domains_check(domain, selector))


class AsyncMetrics(_Resource):
    async def summary(self) -> m.MetricsSummary:
        return await self._c.send(calls.metrics_summary())

    async def admin(self, *, hours: int | None = None) -> m.AdminMetrics:
        return await self._c.send(calls.metrics_admin(hours))


class AsyncWebhookEndpoints(_Resource):
    """Receivers of mailer's events (outbound webhooks); verify their messages with
    `mailer_client.webhooks.verify`."""

    async def create(
        self,
        url: str,
        *,
        events: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> m.CreatedWebhookEndpoint:
        """A new endpoint; its signing secret (`.secret`) is shown this once."""
        return await self._c.send(calls.webhook_endpoints_create(url, events, description, enabled))

    async def list(
        self, *, limit: int = DEFAULT_PAGE_SIZE, offset: int = 0
    ) -> m.Page[m.WebhookEndpoint]:
        return await self._c.send(calls.webhook_endpoints_list(limit, offset))

    def iter(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[m.WebhookEndpoint]:
        return self._c.iter_offset(calls.webhook_endpoints_list, page_size)

    async def get(self, endpoint_id: str) -> m.WebhookEndpoint:
        return await self._c.send(calls.webhook_endpoints_get(endpoint_id))

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> m.WebhookEndpoint:
        """Change the fields given; enabling clears the disabled reason."""
        return await self._c.send(
            calls.webhook_endpoints_update(endpoint_id, url, events, description, enabled)
        )

    async def delete(self, endpoint_id: str) -> None:
        await self._c.send(calls.webhook_endpoints_delete(endpoint_id))

    async def rotate_secret(self, endpoint_id: str) -> m.WebhookSecret:
        return await self._c.send(calls.webhook_endpoints_rotate_secret(endpoint_id))

    async def test(self, endpoint_id: str) -> m.WebhookTestResult:
        """Send a webhook.test event now: the receiver's status and the latency."""
        return await self._c.send(calls.webhook_endpoints_test(endpoint_id))

    async def deliveries(
        self, endpoint_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> m.CursorPage[m.WebhookDelivery]:
        """One page of the endpoint's deliveries, newest first."""
        return await self._c.send(calls.webhook_endpoints_deliveries(endpoint_id, limit, cursor))

    def iter_deliveries(
        self, endpoint_id: str, *, page_size: int | None = None
    ) -> AsyncIterator[m.WebhookDelivery]:
        return self._c.iter_cursor(
            lambda cursor: calls.webhook_endpoints_deliveries(endpoint_id, page_size, cursor)
        )

    async def replay(self, endpoint_id: str, delivery_id: int) -> m.WebhookDelivery:
        """Deliver that event again (same webhook-id)."""
        return await self._c.send(calls.webhook_endpoints_replay(endpoint_id, delivery_id))

    async def replay_failed(
        self, endpoint_id: str, since: datetime | str
    ) -> m.WebhookDeliveriesReplayed:
        """Deliver again every event that failed at or after `since`."""
        return await self._c.send(calls.webhook_endpoints_replay_failed(endpoint_id, since))
