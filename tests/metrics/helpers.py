"""Helpers for the metrics tests: the app with the metrics routers, rows to count, parsing."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession

import mailer.app
import mailer.middleware
import mailer.worker.runtime
from mailer.app import API_PREFIX, create_app
from mailer.config import Settings
from mailer.metrics.endpoints import prometheus_router, router
from mailer.models import Batch, DeadLetter, Recipient, Template, TemplateVersion
from mailer.models.enums import BatchStatus, RecipientStatus
from tests.fixtures.client import ApiClient

# Hooks the lead wires into files this package does not own; tests of them skip until then.
HTTP_HOOK_WIRED = "observe_scope" in inspect.getsource(
    mailer.app
) and "observe(scope," in inspect.getsource(mailer.middleware)
OUTCOMES_HOOK_WIRED = "outcome_observer" in inspect.getsource(mailer.worker.runtime)


def route_paths(app: FastAPI) -> set[str]:
    """Full path templates of every route (included routers are not flattened in
    app.routes on recent FastAPI)."""
    return {c.path for c in iter_route_contexts(app.routes) if c.path}


def metrics_app(settings: Settings, **kwargs: Any) -> FastAPI:
    """create_app(), plus the metrics routers if app.py does not include them yet."""
    app = create_app(settings, **kwargs)
    paths = route_paths(app)
    if f"{API_PREFIX}/metrics" not in paths:
        app.include_router(router, prefix=API_PREFIX)
    if "/metrics" not in paths:
        app.include_router(prometheus_router)
    return app


@asynccontextmanager
async def metrics_client(settings: Settings, **kwargs: Any) -> AsyncIterator[ApiClient]:
    app = metrics_app(settings, **kwargs)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield ApiClient(app=app, http=http)


async def add_batches(session: AsyncSession, statuses: list[BatchStatus]) -> list[str]:
    """Batches in the given statuses (one template), each with one recipient."""
    template = Template(name="t")
    session.add(template)
    await session.flush()
    version = TemplateVersion(
        template_id=template.id, version=1, name="t", subject="s", text="hello", variables={}
    )
    session.add(version)
    await session.flush()
    template.current_version_id = version.id
    ids = []
    for i, status in enumerate(statuses):
        batch = Batch(template_id=template.id, template_version_id=version.id, status=status)
        session.add(batch)
        await session.flush()
        session.add(
            Recipient(
                batch_id=batch.id,
                seq=0,
                email=f"person{i}@example.com",
                status=RecipientStatus.SENT,
            )
        )
        ids.append(batch.id)
    await session.flush()
    return ids


async def add_dead_letter(session: AsyncSession, batch_id: str) -> None:
    session.add(
        DeadLetter(
            batch_id=batch_id,
            seq_start=0,
            seq_end=1,
            recipient_count=1,
            recipient_ids=[1],
            error="smtp 451 for person0@example.com",
            attempts=3,
        )
    )
    await session.flush()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text → {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def family_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
