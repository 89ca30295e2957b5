"""Assembling the FastAPI application: routers, error handlers, the body limit."""

from __future__ import annotations

from fastapi import FastAPI

from orchestra.api import errors, ops, runs, schedules, tasks, workflows
from orchestra.settings import get_settings

DESCRIPTION = """\
Orchestra's service API. Authenticate with `Authorization: Bearer <token>`
(create a key with `orchestra keys create`). Every error has the shape
`{"errors": [{"loc": [...], "msg": "...", "type": "..."}]}`.
"""


def create_app() -> FastAPI:
    """The API with every route of the public surface."""
    app = FastAPI(title="Orchestra", version="1.0.0", description=DESCRIPTION)
    errors.install(app)
    for module in (ops, workflows, runs, tasks, schedules):
        app.include_router(module.router)
    app.add_middleware(errors.BodyLimit, max_bytes=get_settings().max_body_bytes)
    return app

