"""Signals: external events that resume a ``uses: signal`` step.

``deliver_signal`` is what the API (``POST /v1/runs/{id}/signals/{name}``) and
the CLI call. A signal is validated against the step's ``schema`` before anything
is written. If its step is parked the step resumes at once with the payload as
its output; otherwise the signal is kept and the step takes it when it parks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jsonschema
from sqlalchemy import select

from orchestra import db, transitions
from orchestra.errors import Conflict, InputError
from orchestra.ids import new_id
from orchestra.models import TERMINAL_RUN, Run, Signal, SignalWait, StepRun, StepStatus, TaskStatus, utcnow
from orchestra.runs import get_run
from orchestra.waits import after_resume
from orchestra.workflows import get_workflow
from orchestra.outages import translated

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

RECEIVED = "received"


def _signal_schema(run: Run, name: str) -> dict[str, Any] | None:
    spec = get_workflow(run.workflow, run.version)
    names = [str(s.with_.get("name")) for s in spec.steps if s.kind == "signal"]
    if name not in names:
        known = ", ".join(sorted(set(names))) or "no signals at all"
        raise InputError(f"workflow '{run.workflow}' has no signal step named '{name}'",
                         [{"loc": ["name"], "type": "unknown_signal",
                           "msg": f"no `uses: signal` step waits for '{name}'; this workflow waits for: {known}"}])
    step = next(s for s in spec.steps if s.kind == "signal" and s.with_.get("name") == name)
    schema = step.with_.get("schema")
    return schema if isinstance(schema, dict) else None


def validate_signal(schema: dict[str, Any] | None, name: str, payload: Any) -> None:
    """Raise ``InputError`` listing every way ``payload`` breaks the signal's ``schema``."""
    if schema is None:
        return
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
    if errors:
        raise InputError(f"the payload of signal '{name}' does not match its schema", [
            {"loc": ["payload", *e.absolute_path], "type": e.validator,
             "msg": f"{e.message}; send a payload that matches the signal step's `schema`"} for e in errors])


def _refuse_ended(run: Run | transitions.RunRow) -> None:
    if run.status in TERMINAL_RUN:
        raise Conflict(f"run {run.id} already ended as {run.status}; a signal can only resume a pending, running "
                       "or waiting run")


def _parked_wait(session: Any, run_id: str, name: str) -> tuple[SignalWait, StepRun] | None:
    waits = session.scalars(select(SignalWait).where(SignalWait.run_id == run_id, SignalWait.name == name,
                                                     SignalWait.status == TaskStatus.open.value)
                            .order_by(SignalWait.created_at))
    for wait in waits:
        row = session.get(StepRun, wait.row_id)
        if row is not None and row.status == StepStatus.waiting.value:
            return wait, row
    return None


def _receive(session: Any, run: transitions.RunRow, wait: SignalWait, row: StepRun, signal: Signal) -> None:
    signal.consumed_at, signal.wait_id = utcnow(), wait.id
    wait.status, wait.closed_at = RECEIVED, utcnow()
    tx = transitions.within(session)
    transitions.note(tx, run, "signal.consumed", actor=signal.actor, step_id=wait.step_id,
                     payload={"name": wait.name, "signal_id": signal.id, "wait_id": wait.id})
    transitions.resume(tx, run, row.id, signal.payload)


@translated
def deliver_signal(run_id: str, name: str, payload: Any = None, actor: str = "system") -> dict[str, Any]:
    """Deliver signal ``name`` to a run; returns ``{id, run_id, name, status: delivered|buffered}``."""
    run = get_run(run_id)
    _refuse_ended(run)
    validate_signal(_signal_schema(run, name), name, payload)
    with db.write_session() as session:
        tx = transitions.within(session)
        locked = transitions.locked(tx, run_id)
        _refuse_ended(locked)
        signal = Signal(id=new_id(), run_id=run_id, name=name, payload=payload, actor=actor, received_at=utcnow())
        session.add(signal)
        parked = _parked_wait(session, run_id, name)
        transitions.note(transitions.within(session), locked, "signal.received", actor=actor,
                         payload={"name": name, "signal_id": signal.id, "payload": payload, "buffered": parked is None})
        if parked is not None:
            _receive(session, locked, parked[0], parked[1], signal)
    if parked is not None:
        after_resume(run_id, parked[0].id, dispatch=True)
    return {"id": signal.id, "run_id": run_id, "name": name, "status": "delivered" if parked else "buffered"}


def _open_wait(session: Session, wait_id: str) -> tuple[SignalWait, transitions.RunRow, StepRun] | None:
    """The open wait, its run (locked) and its waiting step row, or None if any of them moved on."""
    wait = session.get(SignalWait, wait_id)
    if wait is None or wait.status != TaskStatus.open.value:
        return None
    run = transitions.lock_run(transitions.within(session), wait.run_id)
    row = session.get(StepRun, wait.row_id, populate_existing=True)
    if run is None or row is None or row.status != StepStatus.waiting.value:
        return None
    return wait, run, row


def consume_buffered(wait_id: str) -> bool:
    """Resume a freshly parked wait with a signal that arrived while it was parking; True if one did."""
    with db.write_session() as session:
        found = _open_wait(session, wait_id)
        if found is None or found[1].status in TERMINAL_RUN:
            return False
        wait, run, row = found
        signal = session.scalars(select(Signal).where(Signal.run_id == wait.run_id, Signal.name == wait.name,
                                                      Signal.consumed_at.is_(None)).order_by(Signal.received_at)).first()
        if signal is None:
            return False
        _receive(session, run, wait, row, signal)
    after_resume(wait.run_id, wait.id, dispatch=True)
    return True


def expire_signal_wait(wait_id: str) -> bool:
    """The signal's ``timeout`` passed: fail its step and the run. True if the wait was still open."""
    with db.write_session() as session:
        found = _open_wait(session, wait_id)
        if found is None:
            return False
        wait, run, row = found
        if wait.deadline is not None and wait.deadline > utcnow():
            return False
        wait.status, wait.closed_at = TaskStatus.expired.value, utcnow()
        closed = transitions.fail_waiting(transitions.within(session), run, row.id,
                                          f"no signal '{wait.name}' arrived before its timeout "
                                          f"({wait.deadline.isoformat() if wait.deadline else 'none'})")
    after_resume(wait.run_id, wait.id, dispatch=False, closed=closed)
    return True
