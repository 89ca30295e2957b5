"""``/v1/runs``: submit, read, list, cancel, retry, signal, and the audit trail."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from orchestra import audit, db
from orchestra.api.deps import Caller
from orchestra.api.responses import errors
from orchestra.api.schemas import AuditOut, RunList, RunOut, RunStatusName, RunSubmit, RunSummary, SignalIn, SignalOut
from orchestra.auth import Permission, Principal

from orchestra.errors import Conflict, InputError
from orchestra.models import Run
from orchestra.runs import cancel_run, get_run, list_runs, retry_run, run_view, submit_run
from orchestra.signals import deliver_signal

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/runs", tags=["runs"])
P = Permission
NDJSON = "application/x-ndjson"


def _readable(caller: Principal, run_id: str) -> Run:
    """The run, if the caller may read it (403 for another submitter's run)."""
    caller.require(P.runs_read, P.runs_read_own)
    run = get_run(run_id)
    caller.require_run(run, P.runs_read, P.runs_read_own)
    return run


def _idempotency_key(body: RunSubmit, header: str | None) -> str | None:
    if header is not None and body.idempotency_key is not None and header != body.idempotency_key:
        raise InputError("two different idempotency keys", [{
            "loc": ["header", "Idempotency-Key"], "type": "mismatch",
            "msg": "the Idempotency-Key header and body.idempotency_key differ; send one of them, or the same value"}])
    key = header if header is not None else body.idempotency_key
    if key is not None and not 0 < len(key) <= 200:
        raise InputError("bad idempotency key", [{"loc": ["header", "Idempotency-Key"], "type": "length",
                                                  "msg": "an idempotency key is 1 to 200 characters"}])
    return key


@router.post("", status_code=202, response_model=RunOut, responses=errors(401, 403, 404, 409, 413, 422, 503))
def submit(body: RunSubmit, caller: Caller, response: Response,
           idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> dict[str, Any]:
    """Start a run. The run and its ``run.submitted`` event are recorded before anything is enqueued.

    If Redis is down the run stays ``pending``, the response is 503, and the sweeper dispatches it later;
    sending the same request with the same idempotency key returns that run.
    """
    caller.require(P.runs_submit)
    key = _idempotency_key(body, idempotency_key)
    run, created = submit_run(body.workflow, body.input, version=body.version, idempotency_key=key, key=body.key,
                              actor=caller.name)
    if not created:
        if run.key != body.key:
            raise Conflict(f"idempotency key '{key}' was already used for run {run.id} with business key "
                           f"{run.key!r}; use a new idempotency key for a different request")
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/runs/{run.id}"
    return run_view(run.id)


@router.get("", response_model=RunList, responses=errors(401, 403, 422, 503))
def get_runs(
    caller: Caller,
    workflow: Annotated[str | None, Query(max_length=100)] = None,
    status: RunStatusName | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=36, description="next_cursor of the previous page")] = None,
    key: Annotated[str | None, Query(min_length=1, max_length=200, description="The business key, exactly")] = None,
) -> RunList:
    """Runs, newest first, optionally only those with a business ``key``. A submitter sees only its own runs."""
    caller.require(P.runs_read, P.runs_read_own)
    mine = None if caller.can(P.runs_read) else caller.name
    runs, next_cursor = list_runs(workflow=workflow, status=status, limit=limit, cursor=cursor, submitted_by=mine,
                                  key=key)
    return RunList(runs=[_summary(r) for r in runs], next_cursor=next_cursor)


def _summary(run: Run) -> RunSummary:
    return RunSummary(id=run.id, workflow=run.workflow, version=run.version, status=run.status,  # type: ignore[arg-type]
                      error=run.error, submitted_by=run.submitted_by, key=run.key, created_at=run.created_at.isoformat(),
                      updated_at=run.updated_at.isoformat())


@router.get("/{run_id}", response_model=RunOut, responses=errors(401, 403, 404, 422, 503))
def get_one(run_id: str, caller: Caller) -> dict[str, Any]:
    """A run with its steps in spec order."""
    _readable(caller, run_id)
    return run_view(run_id)


@router.post("/{run_id}/cancel", response_model=RunOut, responses=errors(401, 403, 404, 409, 422, 503))
def cancel(run_id: str, caller: Caller) -> dict[str, Any]:
    """Cancel a pending, running or waiting run; 409 if it already ended."""
    caller.require(P.runs_manage)
    run_id = get_run(run_id).id  # a short id names the run; the write takes the whole one
    cancel_run(run_id, actor=caller.name)
    return run_view(run_id)


@router.post("/{run_id}/retry", response_model=RunOut, status_code=202,
             responses=errors(401, 403, 404, 409, 422, 503))
def retry(run_id: str, caller: Caller) -> dict[str, Any]:
    """Resume a failed run; the steps that succeeded are not run again. 409 unless the run failed."""
    caller.require(P.runs_manage)
    run_id = get_run(run_id).id
    retry_run(run_id, actor=caller.name)
    return run_view(run_id)


@router.post("/{run_id}/signals/{name}", response_model=SignalOut, status_code=202,
             responses=errors(401, 403, 404, 409, 413, 422, 503))
def signal(run_id: str, name: str, body: SignalIn, caller: Caller) -> SignalOut:
    """Send a named signal with a payload to a run; a ``signal`` step waiting for it resumes."""
    caller.require(P.runs_signal, P.runs_signal_own)
    run = get_run(run_id)
    caller.require_run(run, P.runs_signal, P.runs_signal_own)
    return SignalOut.model_validate(deliver_signal(run.id, name, body.payload, actor=caller.name))


@router.get("/{run_id}/audit", response_model=AuditOut, responses={
    200: {"content": {NDJSON: {"schema": {"type": "string"}}},
          "description": f"The events, or one per line when the request sends `Accept: {NDJSON}`."},
    **errors(401, 403, 404, 422, 503)})
def get_audit(run_id: str, caller: Caller, request: Request) -> Response:
    """The run's audit events and whether their hash chain verifies."""
    caller.require(P.audit_read)
    run = get_run(run_id)
    with db.read_session() as session:
        events = audit.list_events(session, run.id)
    verified = audit.verify_chain(events, head=run.audit_hash or None).verified
    items = [audit.event_dict(e) for e in events]
    headers = {"X-Audit-Verified": "true" if verified else "false"}
    if NDJSON in request.headers.get("accept", ""):
        lines = (json.dumps(item, sort_keys=True, default=str) + "\n" for item in items)
        return StreamingResponse(lines, media_type=NDJSON, headers=headers)
    return JSONResponse(AuditOut.model_validate({"events": items, "verified": verified}).model_dump(mode="json"),
                        headers=headers)
