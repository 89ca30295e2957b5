"""The documented error responses of each route, all in the one error shape."""

from __future__ import annotations

from typing import Any

from orchestra.api.schemas import ErrorResponse

DESCRIPTIONS = {
    401: "No API key, or one that is unknown, revoked or expired.",
    403: "The key's role may not do this.",
    404: "No such run, workflow, task or schedule.",
    409: "Clashes with what is recorded (idempotency key reuse, already decided, wrong state).",
    413: "The body is larger than the configured limit.",
    422: "The request, spec or input is invalid; each error names the field and the fix.",
    503: "Redis or the database is unavailable; for a submitted run, it is recorded and dispatched later.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the error model."""
    return {s: {"model": ErrorResponse, "description": DESCRIPTIONS[s]} for s in statuses}
