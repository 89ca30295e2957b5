"""Runs: submission, reading, cancel and retry. Every change is audited.

Submission validates the input and writes the run, its step rows and its
``run.submitted`` event in one transaction before anything is enqueued, so a
broker outage leaves a ``pending`` run that the sweeper dispatches later.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import jsonschema
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from orchestra import broker, db, transitions, waits
from orchestra.errors import Conflict, InputError, NotFound
from orchestra.ids import is_uuid, new_id, resolve_id
from orchestra.models import NO_ITEM, TERMINAL_RUN, Run, RunStatus, StepRun, json_problem, utcnow
from orchestra.settings import get_settings
from orchestra.spec import WorkflowSpec
from orchestra.workflows import get_workflow
from orchestra.outages import translated

log = logging.getLogger(__name__)


_BROKER_ERRORS = (OSError, KombuOperationalError, RedisError)


def validate_input(spec: WorkflowSpec, data: Any) -> None:
    """Raise ``InputError`` listing every way ``data`` breaks the workflow's input_schema."""
    validator = jsonschema.validators.validator_for(spec.input_schema)(spec.input_schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        raise InputError(
            f"input does not match the input_schema of '{spec.name}'",
            [{"loc": ["input", *e.absolute_path], "msg": f"{e.message}; fix the input to match the schema", "type": e.validator}
             for e in errors],
        )


def _check_size(data: Any) -> None:
    problem = json_problem(data)
    if problem is not None:
        raise InputError("the input cannot be stored", [{"loc": ["input"], "type": "not_json",
                                                          "msg": f"the input contains {problem}"}])
    size = len(json.dumps(data, default=str))
    limit = get_settings().max_body_bytes
    if size > limit:
        raise InputError("the input is too large", [{
            "loc": ["input"], "type": "too_large",
            "msg": f"the input is {size} bytes of JSON, over the {limit} byte limit; pass a reference to large data "
                   "instead (or raise ORCHESTRA_MAX_BODY_BYTES)"}])


def _request_hash(workflow: str, version: int | None, data: Any) -> str:
    body = json.dumps({"workflow": workflow, "version": version, "input": data}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


@translated
def submit_run(
    workflow: str,
    data: Any,
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
    key: str | None = None,
    actor: str = "system",
    dispatch: bool = True,
) -> tuple[Run, bool]:
    """Record and enqueue a run. Returns ``(run, created)``; ``created`` is False for an idempotent repeat."""
    _check_size(data)
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200 and idempotency_key.isprintable()):
        raise InputError("the idempotency key is not usable", [{
            "loc": ["idempotency_key"], "type": "idempotency_key",
            "msg": "use 1 to 200 printable characters, e.g. the id of the request in your own system"}])
    request_hash = _request_hash(workflow, version, data)
    if idempotency_key:
        existing = _find_idempotent(workflow, idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    spec = get_workflow(workflow, version)
    validate_input(spec, data)
    run = Run(id=new_id(), workflow=spec.name, version=spec.version or 1, status=RunStatus.pending.value, input=data,
              idempotency_key=idempotency_key, request_hash=request_hash, submitted_by=actor, key=key,
              audit_seq=0, audit_hash="", created_at=utcnow(), updated_at=utcnow())
    try:
        with db.write_session() as session:
            session.add(run)
            tx = transitions.within(session)
            transitions.submitted(tx, transitions.locked(tx, run.id), [s.id for s in spec.steps], actor,
                                  {"workflow": spec.name, "version": run.version, "input": data,
                                   "idempotency_key": idempotency_key})
    except IntegrityError:
        if idempotency_key:
            existing = _find_idempotent(workflow, idempotency_key, request_hash)
            if existing is not None:
                return existing, False
        raise
    if dispatch:
        broker.enqueue(run.id, spec)
    return run, True


def _find_idempotent(workflow: str, key: str, request_hash: str) -> Run | None:
    with db.read_session() as session:
        run = session.scalars(select(Run).where(Run.workflow == workflow, Run.idempotency_key == key)).first()
    if run is not None and run.request_hash != request_hash:
        raise Conflict(f"idempotency key '{key}' was already used for run {run.id} with a different body; "
                       "use a new key for a different request")
    return run


@translated
def get_run(run_id: str) -> Run:
    """The run ``run_id`` names: a full id, or 8+ of its first or last characters (``orchestra.ids.resolve_id``)."""
    with db.read_session() as session:
        run = session.get(Run, resolve_id(session, Run.id, run_id, noun="run", listing="orchestra runs"))
    if run is None:
        raise NotFound(f"no run {run_id}; list runs with `orchestra runs`")
    return run


@translated
def run_view(run_id: str) -> dict[str, Any]:
    """The run as the API shows it, steps in spec order."""
    run = get_run(run_id)
    with db.read_session() as session:
        rows = list(session.scalars(select(StepRun).where(StepRun.run_id == run.id).order_by(StepRun.step_id, StepRun.item)))
    spec = get_workflow(run.workflow, run.version)
    position = {sid: i for i, sid in enumerate(s.id for s in spec.steps)}
    rows.sort(key=lambda r: (position.get(r.step_id, 1 << 30), r.item))
    return {
        "id": run.id, "workflow": run.workflow, "version": run.version, "status": run.status, "input": run.input,
        "output": run.output, "error": run.error, "submitted_by": run.submitted_by, "key": run.key,
        "steps": [
            {"id": r.step_id, "item": None if r.item == NO_ITEM else r.item, "status": r.status, "attempts": r.attempts,
             "output": r.output, "error": r.error,
             "started_at": r.started_at.isoformat() if r.started_at else None,
             "finished_at": r.finished_at.isoformat() if r.finished_at else None}
            for r in rows
        ],
        "created_at": run.created_at.isoformat(), "updated_at": run.updated_at.isoformat(),
    }


@translated
def list_runs(*, workflow: str | None = None, status: str | None = None, limit: int = 50,
              cursor: str | None = None, submitted_by: str | None = None, key: str | None = None,
              id_prefix: str | None = None) -> tuple[list[Run], str | None]:
    """Newest first. ``cursor`` is the last id of the previous page; ``key`` is the business key, exactly."""
    query = select(Run).order_by(Run.id.desc()).limit(limit + 1)
    if workflow:
        query = query.where(Run.workflow == workflow)
    if key:
        query = query.where(Run.key == key)
    if id_prefix:
        query = query.where(Run.id.startswith(id_prefix.lower(), autoescape=True))
    if status:
        if status not in RunStatus.__members__:
            raise InputError("unknown run status", [{
                "loc": ["status"], "type": "invalid",
                "msg": f"'{status}' is not a run status; use one of {', '.join(RunStatus.__members__)}"}])
        query = query.where(Run.status == status)
    if cursor:
        if not is_uuid(cursor):
            raise InputError("the cursor is not a run id", [{
                "loc": ["query", "cursor"], "type": "invalid",
                "msg": f"'{cursor}' is not a cursor; pass the next_cursor of the previous page, or leave it out"}])
        query = query.where(Run.id < cursor)
    if submitted_by:
        query = query.where(Run.submitted_by == submitted_by)
    with db.read_session() as session:
        runs = list(session.scalars(query))
    more = len(runs) > limit
    runs = runs[:limit]
    return runs, (runs[-1].id if more and runs else None)


@translated
def cancel_run(run_id: str, *, actor: str = "system", reason: str = "") -> Run:
    """End a run that has not ended: its open steps are cancelled, its waits close, its queued messages are revoked.

    A step still running stops at its worker's next heartbeat, which finds its lease gone.
    """
    get_run(run_id)
    with db.write_session() as session:
        tx = transitions.within(session)
        run = transitions.locked(tx, run_id)
        if run.status in TERMINAL_RUN:
            raise Conflict(f"run {run_id} already ended as {run.status}; only pending, running or waiting runs can be cancelled")
        closed = transitions.cancel(tx, run, actor=actor, reason=reason)
    waits.drop_waits(closed)
    try:
        broker.revoke_run(run_id)
    except _BROKER_ERRORS as exc:  # the queued messages find the run cancelled and do nothing
        log.warning("could not revoke the queued messages of cancelled run %s: %s", run_id, exc)
    return get_run(run_id)


@translated
def retry_run(run_id: str, *, actor: str = "system") -> Run:
    """Resume a failed run; steps that succeeded are kept and not run again."""
    get_run(run_id)
    with db.write_session() as session:
        tx = transitions.within(session)
        run = transitions.locked(tx, run_id)
        if run.status != RunStatus.failed.value:
            raise Conflict(f"run {run_id} is {run.status}; only failed runs can be retried")
        transitions.retry(tx, run, actor=actor)
    broker.enqueue(run_id)
    return get_run(run_id)
