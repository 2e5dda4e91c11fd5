"""Composing the JSON body of outbox rows, once, at their first attempt.

The outbox row holds what the writer knew cheaply (type, ids, address, the event's own
fields); the batch's template, metadata and tags and the provider's message id are added
here, with one query per kind for a whole claim. The body is stored with the row, so every
later attempt and replay sends the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mailer.models import WebhookDelivery
from mailer.webhook_endpoints import catalog, repository

_EMAIL_TYPES = frozenset(catalog.EMAIL_TYPES)


async def compose(session: AsyncSession, deliveries: Sequence[WebhookDelivery]) -> None:
    """Set `payload` on each delivery (rows of this session) that has none, and flush."""
    todo = [d for d in deliveries if d.payload is None]
    if not todo:
        return
    batch_ids = sorted({d.batch_id for d in todo if d.batch_id})
    batches = await repository.batch_contexts(session, batch_ids) if batch_ids else {}
    lookup = sorted(
        {
            d.recipient_id
            for d in todo
            if d.recipient_id is not None
            and d.type in _EMAIL_TYPES
            and not (d.data or {}).get("providerMessageId")
        }
    )
    provider_ids = await repository.provider_message_ids(session, lookup)
    for d in todo:
        stored = d.data or {}
        batch = batches.get(d.batch_id) if d.batch_id else None
        data: dict[str, Any]
        if d.type in _EMAIL_TYPES:
            data = catalog.email_data(
                recipient_id=d.recipient_id,
                batch_id=d.batch_id,
                email=d.email,
                stored=stored,
                batch=batch,
                provider_message_id=provider_ids.get(d.recipient_id)
                if d.recipient_id is not None
                else None,
            )
        elif d.type.startswith("batch."):
            data = {
                "batchId": d.batch_id,
                "templateId": batch.get("template_id") if batch else None,
                "metadata": batch.get("metadata") if batch else {},
                "tags": batch.get("tags") if batch else {},
                "counts": batch.get("counts") if batch else None,
                **{k: v for k, v in stored.items() if k != "batchId"},
            }
        else:
            data = dict(stored)
        d.payload = catalog.body(d.type, d.created_at, data)
    await session.flush()  # the loaded rows, now with their payload
