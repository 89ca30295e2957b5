"""Unauthenticated operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from orchestra import db, keys, metrics
from orchestra.api.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The API process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health, "description": "A dependency is down."}})
def readyz() -> JSONResponse:
    """Redis and the database answer; 503 naming the one that does not."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def _check_database() -> str:
    try:
        with db.read_session() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # readiness reports, it does not raise
        return f"unavailable: {type(exc).__name__}"
    return "ok"


def _check_redis() -> str:
    try:
        keys.client().ping()
    except Exception as exc:  # readiness reports, it does not raise
        return f"unavailable: {type(exc).__name__}"
    return "ok"


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format."}})
def get_metrics() -> Response:
    """Runs by workflow and status, step durations, waiting tasks, escalations, connector errors and retries."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
