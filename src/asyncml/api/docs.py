"""/docs (Swagger UI) and /redoc served with their files from the install, not a CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so without internet /docs was a
blank page. The files come from the ``fastapi-offline`` package (Swagger UI 5 under the
Apache 2.0 licence, ReDoc 2 under MIT, FastAPI's favicon; its METADATA lists them), served
under /docs-static; FastAPI's page builders do the rest. ReDoc is told not to fetch Google
Fonts.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "/docs-static"


def install_docs(app: FastAPI) -> None:
    """Routes for /docs, /docs/oauth2-redirect and /redoc; build the app with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not added too."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-static")
    title = f"{app.title} API"
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=title,
            oauth2_redirect_url=root + redirect_url,
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=title,
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
