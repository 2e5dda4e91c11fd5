"""create_app(): the FastAPI application and its lifespan."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from mailer import __version__
from mailer.api_docs import install_api_docs
from mailer.auth.cache import KeyCache
from mailer.auth.endpoints import router as keys_router
from mailer.auth.ratelimit import KeyRateLimiter
from mailer.auth.usage import UsageTracker
from mailer.batches.endpoints import OPENAPI_MODELS
from mailer.batches.endpoints import router as batches_router
from mailer.config import Settings, TransportName, get_settings
from mailer.console import create_console
from mailer.db import create_engine, create_read_sessionmaker, create_sessionmaker
from mailer.db.dialect import is_postgresql
from mailer.db.pg import DriverPool
from mailer.deadletters.endpoints import router as dead_letters_router
from mailer.domains.endpoints import router as domains_router
from mailer.emails.endpoints import router as emails_router
from mailer.error_handlers import install_error_handlers
from mailer.health.endpoints import router as health_router
from mailer.jsonbody import DOCUMENTED_MODELS
from mailer.logging import configure_logging
from mailer.metrics import get_metrics
from mailer.metrics.endpoints import prometheus_router
from mailer.metrics.endpoints import router as metrics_router
from mailer.middleware import BodyLimitMiddleware, RequestContextMiddleware
from mailer.openapi import document_errors
from mailer.process_gc import freeze_startup_objects
from mailer.queue.factory import build_queue
from mailer.reputation.endpoints import router as sending_router
from mailer.state import AppState
from mailer.suppressions.endpoints import router as suppressions_router
from mailer.templates.endpoints import router as templates_router
from mailer.unsubscribe.endpoints import router as unsubscribe_router
from mailer.webhook_endpoints.endpoints import document_events
from mailer.webhook_endpoints.endpoints import router as webhook_endpoints_router
from mailer.webhooks.endpoints import router as webhooks_router
from mailer.webhooks.sns import CertFetcher, SnsVerifier

log = structlog.get_logger("mailer.app")
API_PREFIX = "/api/v1"
CONSOLE_PREFIX = "/console"
# Endpoints whose bodies are not JSON (SNS posts text/plain; unsubscribe and console post forms).
NON_JSON_PATHS = (f"{API_PREFIX}/webhooks/", f"{API_PREFIX}/unsubscribe/", f"{CONSOLE_PREFIX}/")
# Body limits by path prefix, for bodies small by nature (each capped by MAX_BODY_BYTES).
# Batches take MAX_BODY_BYTES; SNS messages are at most 256 KB (512 KiB leaves room for the
# envelope's escaping); a template's html and text hold up to 1M characters each.
MiB = 1024 * 1024
BODY_LIMITS = (
    (f"{API_PREFIX}/batches", 2**62),
    (f"{API_PREFIX}/webhooks/", MiB // 2),
    (f"{API_PREFIX}/templates", 16 * MiB),
    (f"{API_PREFIX}/emails", 24 * MiB),  # 10 MB of attachments in base64, and the content
    (f"{API_PREFIX}/admin/suppressions", 8 * MiB),
)
DEFAULT_BODY_LIMIT = MiB


def create_app(
    settings: Settings | None = None,
    *,
    embedded_worker: bool = False,
    sns_fetch_cert: CertFetcher | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """The API. With `embedded_worker` (mailer dev) the sending worker runs in-process too.
    `sns_fetch_cert` replaces the SNS certificate download (tests sign with their own).
    `freeze_gc` (server processes only): see `mailer.process_gc`."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        configure_logging(settings)
        engine = create_engine(settings)
        sessionmaker = create_sessionmaker(engine)
        queue = build_queue(settings)
        usage = UsageTracker(sessionmaker)
        key_cache = KeyCache(engine)
        state = AppState(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            read_sessionmaker=create_read_sessionmaker(engine),
            queue=queue,
            usage=usage,
            key_limiter=KeyRateLimiter(settings.api_rate_limit),
            key_cache=key_cache,
            sns_verifier=SnsVerifier(sns_fetch_cert),
            driver_pool=DriverPool(engine, settings.db_pool_size)
            if is_postgresql(engine)
            else None,
        )
        if not settings.sns_verify:
            log.warning("sns_verification_disabled", hint="SNS_VERIFY=false is for development")
        _warn_about_sns_topics(settings)
        app.state.mailer = state
        metrics = get_metrics(state)
        usage.start()
        await key_cache.start()
        if state.driver_pool is not None:
            await state.driver_pool.start()
        worker = None
        if embedded_worker:
            from mailer.worker.runtime import create_worker

            worker = await create_worker(settings, sessionmaker, queue, metrics=metrics)
            worker.start()
            state.extras["worker"] = worker
        if freeze_gc:
            freeze_startup_objects()
        log.info("api_started", version=__version__, transport=settings.mail_transport.value)
        try:
            yield {"observe_request": metrics.observe_scope}
        finally:
            if worker is not None:
                await worker.stop()
            await usage.stop()
            await key_cache.stop()
            await queue.close()
            if state.driver_pool is not None:
                await state.driver_pool.close()
            await engine.dispose()
            log.info("api_stopped")

    app = FastAPI(
        title="mailer",
        version=__version__,
        description="Self-hosted bulk email: templates, batches, SES/SMTP delivery, "
        "bounces, complaints and suppressions.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,  # served by install_api_docs, without a CDN
        redoc_url=None,
        # FastAPI's native OpenTelemetry: mailer does not use it, and with it on FastAPI
        # asks three global OpenTelemetry providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    # Each router straight onto the app: FastAPI matches nested routers level by level,
    # which cost ~0.3 ms a request here. The routers of the hottest routes first: FastAPI
    # tries the routers in this order (~10 µs a GET /batches/:id).
    for router in (
        batches_router,
        emails_router,
        health_router,
        keys_router,
        templates_router,
        dead_letters_router,
        domains_router,
        suppressions_router,
        sending_router,
        webhooks_router,
        webhook_endpoints_router,
        unsubscribe_router,
        metrics_router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(prometheus_router)
    document_events(app)
    install_api_docs(app, openapi_url="/openapi.json")
    app.mount(CONSOLE_PREFIX, create_console(app))

    # A plain route, not part of the API: `/` leads people to the console.
    async def root(_: Request) -> RedirectResponse:
        return RedirectResponse(f"{CONSOLE_PREFIX}/", status_code=307)

    app.add_route("/", root, methods=["GET", "HEAD"], include_in_schema=False)

    _document_raw_bodies(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        non_json_paths=NON_JSON_PATHS,
        route_limits=BODY_LIMITS,
        default_limit=DEFAULT_BODY_LIMIT,
    )
    app.add_middleware(RequestContextMiddleware)
    _install_bench_reference(app)
    return app


# bench/api compares each endpoint with a bare one doing the same database work on the same
# server (bench/reference.py). It asks for it with this variable, the path of that file;
# unset (every normal run) nothing is mounted.
BENCH_REFERENCE_ENV = "MAILER_BENCH_REFERENCE"


def _install_bench_reference(app: FastAPI) -> None:
    path = os.environ.get(BENCH_REFERENCE_ENV)
    if not path:
        return
    spec = importlib.util.spec_from_file_location("mailer_bench_reference", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{BENCH_REFERENCE_ENV}={path!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install(app)
    log.warning("bench_reference_mounted", path=path)


def _warn_about_sns_topics(settings: Settings) -> None:
    if settings.sns_topic_arns:
        return
    if settings.sns_any_topic:
        log.warning(
            "sns_any_topic_accepted",
            hint="SNS_TOPIC_ARNS is unset: SES events of any SNS topic are accepted. "
            "Set it before production (there, unset accepts no topic).",
        )
    elif settings.mail_transport is TransportName.SES:
        log.error(
            "sns_no_topic_accepted",
            hint="SNS_TOPIC_ARNS is unset and APP_ENV=production: every SES bounce and "
            "complaint notification is refused (403), so bounced and complaining addresses "
            "are not suppressed. Set SNS_TOPIC_ARNS to your SES notification topics.",
        )
    else:
        log.warning(
            "sns_no_topic_accepted",
            hint="SNS_TOPIC_ARNS is unset and APP_ENV=production: POST /webhooks/ses "
            "refuses every SNS message (403).",
        )


def _document_raw_bodies(app: FastAPI) -> None:
    """Endpoints that parse their body themselves reference these models in OpenAPI."""

    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in [*OPENAPI_MODELS, *DOCUMENTED_MODELS]:
            model_schema = model.model_json_schema(
                ref_template="#/components/schemas/{model}", by_alias=True
            )
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        document_errors(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_server_app() -> FastAPI:
    """The app of a `mailer api` process (uvicorn's factory): settings from the
    environment, startup objects frozen out of the garbage collector's way."""
    return create_app(freeze_gc=True)
