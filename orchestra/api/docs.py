"""``/docs`` (Swagger UI) and ``/redoc``, with every script, style and font served from this server.

The files come from the ``fastapi-offline`` wheel, so the pages work on a machine without internet. A
Content-Security-Policy keeps the browser on this origin: ReDoc's own "powered by" logo, which its bundle
loads from a CDN, is refused by the browser instead of being fetched.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs-static"
FAVICON = "/ui/static/favicon.svg"
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CSP
    return response


def install(app: FastAPI) -> None:
    """Serve the two documentation pages and their assets; ``app`` is created with ``docs_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _page(get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} API",
                                         swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                                         swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                                         swagger_favicon_url=FAVICON))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _page(get_redoc_html(openapi_url=openapi_url, title=f"{app.title} API",
                                    redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=FAVICON,
                                    with_google_fonts=False))
