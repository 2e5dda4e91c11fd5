"""The API reference pages, /docs (Swagger UI) and /redoc (ReDoc), served with their
JavaScript and CSS from this server: they work without internet access.

The assets come from the `fastapi-offline` package, which ships the Swagger UI and ReDoc
distribution files."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from mailer.deps import ApiRoute

ASSETS_PATH = "/docs-assets"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
_ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
# Swagger UI sends the document to validator.swagger.io for a badge unless told not to.
_SWAGGER_PARAMETERS = {"validatorUrl": None}


def install_api_docs(app: FastAPI, *, openapi_url: str) -> None:
    """Serve /docs, /redoc and their assets (under /docs-assets) on `app`."""
    app.mount(ASSETS_PATH, StaticFiles(directory=_ASSETS_DIR), name="docs-assets")
    # The API's query rules (unknown parameters refused) hold for these pages too.
    pages = APIRouter(route_class=ApiRoute)

    @pages.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - API reference",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=_SWAGGER_PARAMETERS,
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_PATH}",
        )

    @pages.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @pages.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - API reference",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    app.include_router(pages)
