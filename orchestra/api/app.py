"""Assembling the FastAPI application: routers, error handlers, the body limit."""

from __future__ import annotations

from fastapi import FastAPI

from orchestra.api import docs, errors, ops, runs, schedules, tasks, workflows
from orchestra.settings import get_settings

DESCRIPTION = """\
Orchestra's service API. Authenticate with `Authorization: Bearer <token>`
(create a key with `orchestra keys create`). Every error has the shape
`{"errors": [{"loc": [...], "msg": "...", "type": "..."}]}`.
"""


def create_app() -> FastAPI:
    """The API with every route of the public surface, and ``/docs`` and ``/redoc`` that work offline."""
    app = FastAPI(title="Orchestra", version="1.0.0", description=DESCRIPTION, docs_url=None, redoc_url=None)
    docs.install(app)
    errors.install(app)
    for module in (ops, workflows, runs, tasks, schedules):
        app.include_router(module.router)
    from orchestra.ui import router as ui_router  # imported here: the UI imports orchestra.api.deps

    app.include_router(ui_router)  # the web UI under /ui, left out of the OpenAPI schema
    app.add_middleware(errors.RefuseUnstorable)  # inside BodyLimit, which has already buffered the body
    app.add_middleware(errors.BodyLimit, max_bytes=get_settings().max_body_bytes)
    return app

