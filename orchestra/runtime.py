"""The step runtime: the Celery tasks that carry out a compiled run.

``orchestra.step`` runs one step (or one item of a fan-out) in three moves:

1. ``claim_step`` — one transaction: check the run and the step's needs, evaluate
   ``if``, render ``with``, mark the step running under a lease, audit it. A step
   already recorded as succeeded is never executed again; a message for a step
   whose needs are not met, or whose lease another live worker holds, does nothing.
2. the step kind runs (``orchestra.steps``), with the lease renewed by heartbeats.
3. ``complete_step`` / ``fail_step`` / ``park_step`` — one transaction each.

``orchestra.collect`` joins a fan-out, ``orchestra.advance`` compiles the next
segment, and ``orchestra.finish`` ends the run once every step has ended (the last
step of a canvas does that itself when it can, saving a message).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, cast

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Table, and_, bindparam, insert, or_, select, update

from orchestra import db, leases, templates
from orchestra.audit import ChainHead, append_event
from orchestra.compiler import dispatch_run, fanout_canvas
from orchestra.errors import OrchestraError, StepError, StepTimeout, TemplateError
from orchestra.ids import new_id
from orchestra.models import DONE_STEP, NO_ITEM, TERMINAL_RUN, Run, RunStatus, StepRun, StepStatus, utcnow
from orchestra.settings import get_settings
from orchestra.spec import Step, WorkflowSpec
from orchestra.steps.base import Park, StepCall, get_kind
from orchestra.workflows import get_workflow

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 1_000_000


class Outcome(str, Enum):
    """What a claim decided for one step message."""

    RUN = "run"  # claimed: execute it
    DONE = "done"  # already ended well; nothing to do
    PASS = "pass"  # not ready, held elsewhere, or the run ended
    FANOUT = "fanout"  # a for_each parent: send its items


@dataclass
class Claim:
    outcome: Outcome
    call: StepCall | None = None
    token: str = ""
    items: int = 0
    spec: WorkflowSpec | None = None  # set for FANOUT, which compiles the items' canvas


RUNS = cast(Table, Run.__table__)
STEPS = cast(Table, StepRun.__table__)
_RUN_COLUMNS = (RUNS.c.id, RUNS.c.workflow, RUNS.c.version, RUNS.c.status, RUNS.c.input, RUNS.c.submitted_by,
                RUNS.c.created_at, RUNS.c.audit_seq, RUNS.c.audit_hash)


@dataclass
class LockedRun:
    """The run columns the runtime reads, with its audit head, locked for one transaction.

    The hot path uses SQLAlchemy Core rather than ORM objects: a step costs two
    short transactions, and the ORM's unit of work was most of their time.
    """

    id: str
    workflow: str
    version: int
    status: str
    input: Any
    submitted_by: str
    created_at: datetime
    head: ChainHead

    def event(self, session: Any, type: str, **fields: Any) -> None:
        append_event(session, self.head, type, **fields)

    def save(self, session: Any, **changes: Any) -> None:
        """Write the audit head, ``updated_at`` and ``changes`` back to the run row."""
        session.execute(_SAVE_RUN, {"run_id_": self.id, "audit_seq": self.head.seq, "audit_hash": self.head.hash,
                                    "updated_at": utcnow(), **changes})
        self.status = changes.get("status", self.status)


# Built once: constructing a statement costs more than executing it on the hot path.
_LOCK_RUN = select(*_RUN_COLUMNS).where(RUNS.c.id == bindparam("run_id")).with_for_update()
_SAVE_RUN = update(RUNS).where(RUNS.c.id == bindparam("run_id_"))
_STEP_ROW = select(STEPS).where(STEPS.c.id == bindparam("row_id"))
_SET_STEP = update(STEPS).where(STEPS.c.id == bindparam("row_id_"))
_STEP_ROWS = select(STEPS).where(
    STEPS.c.run_id == bindparam("run_id"), STEPS.c.step_id.in_(bindparam("wanted", expanding=True)),
    or_(STEPS.c.item == NO_ITEM, and_(STEPS.c.step_id == bindparam("step_id"), STEPS.c.item == bindparam("item"))),
)


def lock_run(session: Any, run_id: str) -> LockedRun | None:
    row = session.execute(_LOCK_RUN, {"run_id": run_id}).first()
    if row is None:
        return None
    return LockedRun(id=row.id, workflow=row.workflow, version=row.version, status=row.status, input=row.input,
                     submitted_by=row.submitted_by, created_at=row.created_at,
                     head=ChainHead(row.id, row.audit_seq, row.audit_hash))


def _set_step(session: Any, row_id: str, **values: Any) -> int:
    return int(session.execute(_SET_STEP, {"row_id_": row_id, **values}).rowcount)


def step_context(run: Any, rows: list[Any], item: Any = None) -> dict[str, Any]:
    """What templates and conditions see."""
    steps = {r.step_id: {"output": r.output, "status": r.status} for r in rows if r.item == NO_ITEM}
    return {"input": run.input, "steps": steps, "item": item,
            "run": {"id": run.id, "workflow": run.workflow, "version": run.version, "submitted_by": run.submitted_by}}


def _load_rows(session: Any, run_id: str, spec: WorkflowSpec, step_id: str, item: int) -> dict[tuple[str, int], Any]:
    step = spec.by_id[step_id]
    wanted = sorted(set(step.needs or []) | spec.reads[step_id] | {step_id})
    params = {"run_id": run_id, "wanted": wanted, "step_id": step_id, "item": item}
    return {(r.step_id, r.item): r for r in session.execute(_STEP_ROWS, params)}


def claim_step(run_id: str, step_id: str, item: int) -> Claim:
    """Decide, in one transaction, whether this message runs the step."""
    with db.write_transaction() as session:
        run = lock_run(session, run_id)
        if run is None or run.status in TERMINAL_RUN:
            return Claim(Outcome.PASS)
        spec = get_workflow(run.workflow, run.version)
        step = spec.by_id[step_id]
        rows = _load_rows(session, run_id, spec, step_id, item)
        row = rows.get((step_id, item))
        parent = rows.get((step_id, NO_ITEM))
        if row is None or parent is None:
            return Claim(Outcome.PASS)
        if row.status in DONE_STEP:
            return Claim(Outcome.DONE)
        if not _claimable(row) or any(rows.get((n, NO_ITEM)) is None or rows[(n, NO_ITEM)].status not in DONE_STEP
                                      for n in step.needs or []):
            return Claim(Outcome.PASS)
        if item >= 0 and parent.status != StepStatus.running.value:
            return Claim(Outcome.PASS)
        context = step_context(run, list(rows.values()), row.input if item >= 0 else None)
        try:
            return _claim_ready(session, run, spec, step, row, context)
        except TemplateError as exc:
            _record_failure(session, run, row, parent, exc)
            return Claim(Outcome.PASS)


def _claimable(row: Any) -> bool:
    if row.status == StepStatus.pending.value:
        return True
    if row.status == StepStatus.running.value:
        return row.lease_expires_at is None or row.lease_expires_at <= utcnow()
    return False


def _claim_ready(session: Any, run: LockedRun, spec: WorkflowSpec, step: Step, row: Any,
                 context: dict[str, Any]) -> Claim:
    now = utcnow()
    if run.status == RunStatus.pending.value:
        run.event(session, "run.started", payload={"workflow": run.workflow, "version": run.version})
    run_status = RunStatus.running.value
    if row.item == NO_ITEM and step.if_ and not templates.evaluate(step.if_, context):
        _set_step(session, row.id, status=StepStatus.skipped.value, finished_at=now)
        run.event(session, "step.skipped", step_id=step.id, payload={"if": step.if_})
        run.save(session, status=run_status)
        return Claim(Outcome.DONE)
    if row.item == NO_ITEM and step.for_each:
        return _start_fanout(session, run, spec, step, row, context)
    params = templates.render(step.with_, context)
    token, attempt = new_id(), row.attempts + 1
    _set_step(session, row.id, status=StepStatus.running.value, attempts=attempt, input=params,
              started_at=row.started_at or now, lease_token=token, lease_expires_at=leases.expiry())
    run.event(session, "step.started", step_id=step.id,
              payload={"attempt": attempt, **({"item": row.item} if row.item >= 0 else {})})
    run.save(session, status=run_status)
    call = StepCall(run_id=run.id, step_id=step.id, item=row.item, attempt=attempt, spec=spec, step=step,
                    params=params, context=context, actor=run.submitted_by, execution_id=row.id)
    return Claim(Outcome.RUN, call=call, token=token)


def _start_fanout(session: Any, run: LockedRun, spec: WorkflowSpec, step: Step, row: Any,
                  context: dict[str, Any]) -> Claim:
    items = templates.evaluate(step.for_each or "", context)
    if not isinstance(items, list):
        raise TemplateError(f"for_each `{step.for_each}` gave {type(items).__name__}, not a list; make it name a list")
    limit = get_settings().max_for_each_items
    if len(items) > limit:
        raise TemplateError(f"for_each `{step.for_each}` gave {len(items)} items, over the limit of {limit}; split the "
                            "input across runs or raise ORCHESTRA_MAX_FOR_EACH_ITEMS")
    now = utcnow()
    existing = set(session.execute(select(STEPS.c.item).where(STEPS.c.run_id == run.id, STEPS.c.step_id == step.id,
                                                              STEPS.c.item >= 0)).scalars())
    fresh = [{"id": new_id(), "run_id": run.id, "step_id": step.id, "item": i, "status": StepStatus.pending.value,
              "attempts": 0, "input": value} for i, value in enumerate(items) if i not in existing]
    if fresh:
        session.execute(insert(STEPS), fresh)
    run.event(session, "step.started", step_id=step.id, payload={"items": len(items)})
    values: dict[str, Any] = {"status": StepStatus.running.value, "started_at": row.started_at or now,
                              "attempts": row.attempts + 1, "input": {"items": len(items)}}
    if not items:
        values.update(status=StepStatus.succeeded.value, output=[], finished_at=now)
        run.event(session, "step.succeeded", step_id=step.id, payload={"items": 0})
    _set_step(session, row.id, **values)
    run.save(session, status=RunStatus.running.value)
    return Claim(Outcome.FANOUT, items=len(items), spec=spec) if items else Claim(Outcome.DONE)


def _held_row(session: Any, run_id: str, row_id: str, token: str) -> tuple[LockedRun, Any] | None:
    """The locked run and the step row, if this worker's lease on the row still holds."""
    run = lock_run(session, run_id)
    row = session.execute(_STEP_ROW, {"row_id": row_id}).first()
    if run is None or row is None or row.lease_token != token:
        return None
    return run, row


def complete_step(run_id: str, row_id: str, token: str, output: Any) -> bool:
    """Record a step's output. False if the lease was lost to another worker meanwhile."""
    with db.write_transaction() as session:
        held = _held_row(session, run_id, row_id, token)
        if held is None or held[1].status != StepStatus.running.value:
            return False
        run, row = held
        now = utcnow()
        _set_step(session, row.id, status=StepStatus.succeeded.value, output=output, error=None, finished_at=now,
                  lease_token=None, lease_expires_at=None)
        duration = (now - row.started_at).total_seconds() if row.started_at else None
        run.event(session, "step.succeeded", step_id=row.step_id,
                  payload={"attempt": row.attempts, "duration_s": duration, **({"item": row.item} if row.item >= 0 else {})})
        run.save(session)
    return True


def schedule_retry(run_id: str, row_id: str, token: str, error: str, delay: float) -> bool:
    """Put a failed attempt back to pending; the lease covers the backoff so the sweeper leaves it alone."""
    with db.write_transaction() as session:
        held = _held_row(session, run_id, row_id, token)
        if held is None:
            return False
        run, row = held
        _set_step(session, row.id, status=StepStatus.pending.value, error=error, lease_expires_at=leases.expiry(delay))
        run.event(session, "step.retrying", step_id=row.step_id,
                  payload={"attempt": row.attempts, "error": error, "delay_s": delay,
                           **({"item": row.item} if row.item >= 0 else {})})
        run.save(session)
    return True


def hold_back(run_id: str, row_id: str, token: str, delay: float) -> bool:
    """A connector said "not yet" (rate limit): give the attempt back and wait, holding no worker."""
    with db.write_transaction() as session:
        held = _held_row(session, run_id, row_id, token)
        if held is None:
            return False
        _set_step(session, row_id, status=StepStatus.pending.value, attempts=max(0, held[1].attempts - 1),
                  lease_expires_at=leases.expiry(delay))
    return True


def fail_step(run_id: str, row_id: str, token: str | None, exc: BaseException) -> None:
    """The last attempt failed: the step, and with it the run, fail with the error recorded."""
    with db.write_transaction() as session:
        run = lock_run(session, run_id)
        row = session.execute(_STEP_ROW, {"row_id": row_id}).first()
        if run is None or row is None or (token is not None and row.lease_token != token):
            return
        parent = row if row.item == NO_ITEM else session.execute(select(STEPS).where(
            STEPS.c.run_id == run_id, STEPS.c.step_id == row.step_id, STEPS.c.item == NO_ITEM)).one()
        _record_failure(session, run, row, parent, exc)


def _record_failure(session: Any, run: LockedRun, row: Any, parent: Any, exc: BaseException) -> None:
    now = utcnow()
    message = describe(exc)
    label = row.step_id + (f"[{row.item}]" if row.item >= 0 else "")
    for target in {row.id, parent.id}:
        _set_step(session, target, status=StepStatus.failed.value, error=message, finished_at=now,
                  lease_token=None, lease_expires_at=None)
    run.event(session, "step.failed", step_id=row.step_id,
              payload={"attempt": row.attempts, "error": message, **({"item": row.item} if row.item >= 0 else {})})
    changes: dict[str, Any] = {}
    if run.status not in TERMINAL_RUN:
        changes = {"status": RunStatus.failed.value, "error": f"step {label} failed: {message}"}
        run.event(session, "run.failed", payload={"step": label, "error": message})
    run.save(session, **changes)


def park_step(run_id: str, row_id: str, token: str, park: Park) -> bool:
    """Leave the step waiting: no lease, no worker; the run waits unless other branches still run."""
    with db.write_transaction() as session:
        held = _held_row(session, run_id, row_id, token)
        if held is None:
            return False
        run, row = held
        _set_step(session, row.id, status=StepStatus.waiting.value, lease_token=None, lease_expires_at=None)
        run.event(session, park.event, step_id=row.step_id, payload=park.audit)
        run.save(session, **({} if run.status in TERMINAL_RUN else {"status": RunStatus.waiting.value}))
    if park.after_commit is not None:
        park.after_commit()
    return True


def describe(exc: BaseException) -> str:
    from orchestra.redact import redact_text

    if isinstance(exc, OrchestraError):
        return redact_text(exc.message)
    return redact_text(f"{type(exc).__name__}: {exc}")


def _serialisable(output: Any) -> Any:
    try:
        text = json.dumps(output)
    except (TypeError, ValueError) as exc:
        raise StepError(f"the step returned something that is not JSON ({exc}); return dicts, lists, str, "
                        "numbers, bools or None", retryable=False) from exc
    if len(text) > MAX_OUTPUT_BYTES:
        raise StepError(f"the step's output is {len(text)} bytes, over the {MAX_OUTPUT_BYTES} byte limit; "
                        "store large data elsewhere and return a reference", retryable=False)
    return output


def execute(task: Task, claim: Claim) -> None:
    """Run a claimed step and record what happened."""
    call = claim.call
    assert call is not None
    leases.hold(call.execution_id, claim.token)
    try:
        output = _serialisable(get_kind(call.step.kind).execute(call))
    except Park as park:
        park_step(call.run_id, call.execution_id, claim.token, park)
        return
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, typed or not
        _handle_failure(task, call, claim.token, exc)
        return
    finally:
        leases.release(call.execution_id)
    complete_step(call.run_id, call.execution_id, claim.token, output)


def _handle_failure(task: Task, call: StepCall, token: str, exc: BaseException) -> None:
    if isinstance(exc, SoftTimeLimitExceeded):
        exc = StepTimeout(f"step ran past its timeout of {call.step.timeout}s; raise `timeout` or make it faster")
    held_back = getattr(exc, "retry_after", None)
    if held_back is not None and getattr(exc, "retryable", False) and getattr(exc, "holds_back", False):
        if hold_back(call.run_id, call.execution_id, token, float(held_back)):
            raise task.retry(countdown=float(held_back), max_retries=None)
        return
    retryable = exc.retryable if isinstance(exc, OrchestraError) else True
    if retryable and call.attempt < call.step.retry.attempts:
        delay = call.step.retry.delay(call.attempt)
        if held_back is not None:
            delay = max(delay, float(held_back))
        if schedule_retry(call.run_id, call.execution_id, token, describe(exc), delay):
            raise task.retry(countdown=delay, max_retries=None)
        return
    log.info("step %s of run %s failed: %s", call.step_id, call.run_id, describe(exc))
    fail_step(call.run_id, call.execution_id, token, exc)


@shared_task(name="orchestra.step", bind=True, acks_late=True, max_retries=None)
def run_step(self: Task, run_id: str, step_id: str, item: int = NO_ITEM, finish: bool = False) -> None:
    """Run one step (or one fan-out item) of a run. Safe to deliver more than once.

    ``finish`` marks the canvas's last step, which then ends the run itself.
    """
    claim = claim_step(run_id, step_id, item)
    if claim.outcome == Outcome.RUN:
        execute(self, claim)
    elif claim.outcome == Outcome.FANOUT:
        assert claim.spec is not None
        raise self.replace(fanout_canvas(claim.spec, run_id, step_id, claim.items))
    if finish:
        finish_run(run_id)


@shared_task(name="orchestra.collect", acks_late=True)
def collect_fanout(run_id: str, step_id: str) -> None:
    """Join a fan-out: the parent step succeeds with its items' outputs, in order."""
    with db.write_transaction() as session:
        run = lock_run(session, run_id)
        if run is None or run.status in TERMINAL_RUN:
            return
        rows = list(session.execute(select(STEPS).where(STEPS.c.run_id == run_id, STEPS.c.step_id == step_id)
                                    .order_by(STEPS.c.item)))
        parent = next((r for r in rows if r.item == NO_ITEM), None)
        items = [r for r in rows if r.item >= 0]
        if parent is None or parent.status != StepStatus.running.value:
            return
        if any(r.status not in DONE_STEP for r in items):
            return
        _set_step(session, parent.id, status=StepStatus.succeeded.value, output=[r.output for r in items],
                  finished_at=utcnow())
        run.event(session, "step.succeeded", step_id=step_id, payload={"items": len(items)})
        run.save(session)


@shared_task(name="orchestra.advance", acks_late=True)
def advance_run(run_id: str) -> None:
    """End of a segment: compile and send the next one from the database."""
    with db.read_session() as session:
        run = session.get(Run, run_id)
        if run is None or run.status in TERMINAL_RUN:
            return
    dispatch_run(run_id)


@shared_task(name="orchestra.finish", acks_late=True)
def finish_run(run_id: str) -> None:
    """End the run if every step has ended; otherwise leave it to whoever finishes last."""
    with db.write_transaction() as session:
        run = lock_run(session, run_id)
        if run is None or run.status in TERMINAL_RUN:
            return
        rows = list(session.execute(select(STEPS).where(STEPS.c.run_id == run_id, STEPS.c.item == NO_ITEM)))
        statuses = {r.status for r in rows}
        if statuses <= {s.value for s in DONE_STEP}:
            _succeed_run(session, run, rows)
        elif StepStatus.waiting.value in statuses and not statuses & {StepStatus.running.value}:
            run.save(session, status=RunStatus.waiting.value)


def _succeed_run(session: Any, run: LockedRun, rows: list[Any]) -> None:
    spec = get_workflow(run.workflow, run.version)
    try:
        output = templates.render(spec.outputs, step_context(run, rows)) if spec.outputs else None
    except TemplateError as exc:
        run.event(session, "run.failed", payload={"error": f"outputs: {exc.message}"})
        run.save(session, status=RunStatus.failed.value, error=f"outputs: {exc.message}")
        return
    duration = (utcnow() - run.created_at).total_seconds()
    run.event(session, "run.succeeded", payload={"duration_s": duration})
    run.save(session, status=RunStatus.succeeded.value, output=output)


__all__ = ["run_step", "collect_fanout", "advance_run", "finish_run", "claim_step"]
