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
from dataclasses import dataclass, replace
from functools import lru_cache
from datetime import datetime
from enum import Enum
from typing import Any, cast

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Table

from orchestra import leases, rawsql, templates
from orchestra.audit import ChainHead, chain_event
from orchestra.compiler import dispatch_run, fanout_canvas
from orchestra.errors import OrchestraError, StepError, StepTimeout, TemplateError
from orchestra.ids import new_id
from orchestra.models import DONE_STEP, NO_ITEM, TERMINAL_RUN, RunStatus, StepRun, StepStatus, utcnow
from orchestra.rawsql import Record, Tx
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
    held: tuple[LockedRun, Record] | None = None  # for RUN: the run and the step row as the claim left them


@dataclass
class LockedRun:
    """The run columns the runtime reads, with its audit head, locked for one transaction."""

    id: str
    workflow: str
    version: int
    status: str
    input: Any
    submitted_by: str
    created_at: datetime
    head: ChainHead
    seq_read: int  # audit_seq as last read or written: a deferred write is guarded on it

    def event(self, tx: Tx, type: str, **fields: Any) -> None:
        tx.insert("audit_events", [chain_event(self.head, type, **fields)])

    def copy(self) -> LockedRun:
        return replace(self, head=replace(self.head))

    def save(self, tx: Tx, **changes: Any) -> None:
        """Write the audit head, ``updated_at`` and ``changes`` back to the run row.

        Guarded on the audit head it started from: any other writer of this run
        moves the head on, so a plan made on an older snapshot is made again.
        A status it already has is not written: that would rewrite its indexes.
        """
        if changes.get("status") == self.status:
            del changes["status"]
        tx.update("runs", self.id, guard={"audit_seq": self.seq_read}, audit_seq=self.head.seq,
                  audit_hash=self.head.hash, updated_at=utcnow(), **changes)
        self.seq_read = self.head.seq
        self.status = changes.get("status", self.status)


_STEP_COLUMNS = ", ".join(c.name for c in cast(Table, StepRun.__table__).c)
_LOCK_RUN = ("SELECT id, workflow, version, status, input, submitted_by, created_at, audit_seq, audit_hash "
             "FROM runs WHERE id = :run_id")
_STEP_ROW = f"SELECT {_STEP_COLUMNS} FROM step_runs WHERE id = :row_id"
_TOP_ROWS = f"SELECT {_STEP_COLUMNS} FROM step_runs WHERE run_id = :run_id AND item = -1"


@lru_cache(maxsize=64)
def _rows_for(count: int) -> str:
    """A step's own row (or item row), its parent, and the ``count`` top-level rows it reads."""
    wanted = ", ".join(f":w{i}" for i in range(count))
    return (f"SELECT {_STEP_COLUMNS} FROM step_runs WHERE run_id = :run_id AND step_id IN ({wanted}) "
            "AND (item = -1 OR (step_id = :step_id AND item = :item))")


def lock_run(tx: Tx, run_id: str) -> LockedRun | None:
    row = tx.lock(_LOCK_RUN, run_id=run_id)
    if row is None:
        return None
    return LockedRun(id=row.id, workflow=row.workflow, version=row.version, status=row.status, input=row.input,
                     submitted_by=row.submitted_by, created_at=row.created_at,
                     head=ChainHead(row.id, row.audit_seq, row.audit_hash), seq_read=row.audit_seq)


def step_context(run: Any, rows: list[Any], item: Any = None) -> dict[str, Any]:
    """What templates and conditions see."""
    steps = {r.step_id: {"output": r.output, "status": r.status} for r in rows if r.item == NO_ITEM}
    return {"input": run.input, "steps": steps, "item": item,
            "run": {"id": run.id, "workflow": run.workflow, "version": run.version, "submitted_by": run.submitted_by}}


def _load_rows(tx: Tx, run_id: str, spec: WorkflowSpec, step_id: str, item: int) -> dict[tuple[str, int], Any]:
    step = spec.by_id[step_id]
    wanted = sorted(set(step.needs or []) | spec.reads[step_id] | {step_id})
    params = {f"w{i}": sid for i, sid in enumerate(wanted)}
    rows = tx.all(_rows_for(len(wanted)), run_id=run_id, step_id=step_id, item=item, **params)
    return {(r.step_id, r.item): r for r in rows}


def claim_step(run_id: str, step_id: str, item: int) -> Claim:
    """Decide, in one transaction, whether this message runs the step."""
    return rawsql.optimistic(lambda tx: _plan_claim(tx, run_id, step_id, item))


def _plan_claim(tx: Tx, run_id: str, step_id: str, item: int) -> Claim:
    run = lock_run(tx, run_id)
    if run is None or run.status in TERMINAL_RUN:
        return Claim(Outcome.PASS)
    spec = get_workflow(run.workflow, run.version)
    step = spec.by_id[step_id]
    rows = _load_rows(tx, run_id, spec, step_id, item)
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
        return _claim_ready(tx, run, spec, step, row, context)
    except TemplateError as exc:
        _record_failure(tx, run, row, parent, exc)
        return Claim(Outcome.PASS)


def _as_read(row: Any) -> dict[str, Any]:
    """What a claim decided on: a write guarded on it is refused if the row moved on meanwhile."""
    return {"status": row.status, "lease_token": row.lease_token, "lease_expires_at": row.lease_expires_at}


def _claimable(row: Any) -> bool:
    if row.status == StepStatus.pending.value:
        return True
    if row.status == StepStatus.running.value:
        return row.lease_expires_at is None or row.lease_expires_at <= utcnow()
    return False


def _claim_ready(tx: Tx, run: LockedRun, spec: WorkflowSpec, step: Step, row: Any,
                 context: dict[str, Any]) -> Claim:
    now = utcnow()
    if run.status == RunStatus.pending.value:
        run.event(tx, "run.started", payload={"workflow": run.workflow, "version": run.version})
    run_status = RunStatus.running.value
    if row.item == NO_ITEM and step.if_ and not templates.evaluate(step.if_, context):
        tx.update("step_runs", row.id, guard=_as_read(row), status=StepStatus.skipped.value, finished_at=now)
        run.event(tx, "step.skipped", step_id=step.id, payload={"if": step.if_})
        run.save(tx, status=run_status)
        return Claim(Outcome.DONE)
    if row.item == NO_ITEM and step.for_each:
        return _start_fanout(tx, run, spec, step, row, context)
    params = templates.render(step.with_, context)
    token, attempt = new_id(), row.attempts + 1
    tx.update("step_runs", row.id, guard=_as_read(row), status=StepStatus.running.value, attempts=attempt, input=params,
              started_at=row.started_at or now, lease_token=token, lease_expires_at=leases.expiry())
    run.event(tx, "step.started", step_id=step.id,
              payload={"attempt": attempt, **({"item": row.item} if row.item >= 0 else {})})
    run.save(tx, status=run_status)
    call = StepCall(run_id=run.id, step_id=step.id, item=row.item, attempt=attempt, spec=spec, step=step,
                    params=params, context=context, actor=run.submitted_by, execution_id=row.id)
    held = Record(id=row.id, step_id=row.step_id, item=row.item, attempts=attempt, started_at=row.started_at or now)
    return Claim(Outcome.RUN, call=call, token=token, held=(run, held))


def _start_fanout(tx: Tx, run: LockedRun, spec: WorkflowSpec, step: Step, row: Any,
                  context: dict[str, Any]) -> Claim:
    items = templates.evaluate(step.for_each or "", context)
    if not isinstance(items, list):
        raise TemplateError(f"for_each `{step.for_each}` gave {type(items).__name__}, not a list; make it name a list")
    limit = get_settings().max_for_each_items
    if len(items) > limit:
        raise TemplateError(f"for_each `{step.for_each}` gave {len(items)} items, over the limit of {limit}; split the "
                            "input across runs or raise ORCHESTRA_MAX_FOR_EACH_ITEMS")
    now = utcnow()
    existing = {r.item for r in tx.all("SELECT item FROM step_runs WHERE run_id = :run_id AND step_id = :step_id "
                                       "AND item >= 0", run_id=run.id, step_id=step.id)}
    fresh = [{"id": new_id(), "run_id": run.id, "step_id": step.id, "item": i, "status": StepStatus.pending.value,
              "attempts": 0, "input": value} for i, value in enumerate(items) if i not in existing]
    if fresh:
        tx.insert("step_runs", fresh)
    run.event(tx, "step.started", step_id=step.id, payload={"items": len(items)})
    values: dict[str, Any] = {"status": StepStatus.running.value, "started_at": row.started_at or now,
                              "attempts": row.attempts + 1, "input": {"items": len(items)}}
    if not items:
        values.update(status=StepStatus.succeeded.value, output=[], finished_at=now)
        run.event(tx, "step.succeeded", step_id=step.id, payload={"items": 0})
    tx.update("step_runs", row.id, guard=_as_read(row), **values)
    run.save(tx, status=RunStatus.running.value)
    return Claim(Outcome.FANOUT, items=len(items), spec=spec) if items else Claim(Outcome.DONE)


def _held_row(tx: Tx, run_id: str, row_id: str, token: str) -> tuple[LockedRun, Any] | None:
    """The locked run and the step row, if this worker's lease on the row still holds."""
    run = lock_run(tx, run_id)
    row = tx.one(_STEP_ROW, row_id=row_id)
    if run is None or row is None or row.lease_token != token:
        return None
    return run, row


def complete_step(run_id: str, row_id: str, token: str, output: Any, finish: bool = False,
                  held: tuple[LockedRun, Record] | None = None) -> bool:
    """Record a step's output, and with ``finish`` end the run if this was its last open step.

    ``held`` is the run and row as this worker's claim left them. Nothing else
    usually touches the run while its step runs, so the completion is first
    written from that, unread, guarded on the run's audit head and the lease.
    False if the lease was lost to another worker meanwhile.
    """
    def read_and_plan(tx: Tx) -> bool:
        found = _held_row(tx, run_id, row_id, token)
        if found is None or found[1].status != StepStatus.running.value:
            return False
        return _plan_completion(tx, *found, token, output, finish)

    blind = None
    if held is not None and not finish:  # ending the run reads every step's row
        blind = lambda tx: _plan_completion(tx, held[0].copy(), held[1], token, output, finish)  # noqa: E731
    return rawsql.optimistic(read_and_plan, blind=blind)


def _plan_completion(tx: Tx, run: LockedRun, row: Record, token: str, output: Any, finish: bool) -> bool:
    now = utcnow()
    tx.update("step_runs", row.id, guard={"status": StepStatus.running.value, "lease_token": token},
              status=StepStatus.succeeded.value, output=output, error=None, finished_at=now,
              lease_token=None, lease_expires_at=None)
    duration = (now - row.started_at).total_seconds() if row.started_at else None
    run.event(tx, "step.succeeded", step_id=row.step_id,
              payload={"attempt": row.attempts, "duration_s": duration, **({"item": row.item} if row.item >= 0 else {})})
    run.save(tx)
    if finish and run.status not in TERMINAL_RUN:
        # The snapshot this plan reads from does not hold its own writes yet: tell _finish what just ended.
        _finish(tx, run, ended=Record(row, status=StepStatus.succeeded.value, output=output))
    return True


def schedule_retry(run_id: str, row_id: str, token: str, error: str, delay: float) -> bool:
    """Put a failed attempt back to pending; the lease covers the backoff so the sweeper leaves it alone."""
    with rawsql.transaction() as tx:
        held = _held_row(tx, run_id, row_id, token)
        if held is None:
            return False
        run, row = held
        tx.update("step_runs", row.id, status=StepStatus.pending.value, error=error, lease_expires_at=leases.expiry(delay))
        run.event(tx, "step.retrying", step_id=row.step_id,
                  payload={"attempt": row.attempts, "error": error, "delay_s": delay,
                           **({"item": row.item} if row.item >= 0 else {})})
        run.save(tx)
    return True


def hold_back(run_id: str, row_id: str, token: str, delay: float) -> bool:
    """A connector said "not yet" (rate limit): give the attempt back and wait, holding no worker."""
    with rawsql.transaction() as tx:
        held = _held_row(tx, run_id, row_id, token)
        if held is None:
            return False
        tx.update("step_runs", row_id, status=StepStatus.pending.value, attempts=max(0, held[1].attempts - 1),
                  lease_expires_at=leases.expiry(delay))
    return True


def fail_step(run_id: str, row_id: str, token: str | None, exc: BaseException) -> None:
    """The last attempt failed: the step, and with it the run, fail with the error recorded."""
    with rawsql.transaction() as tx:
        run = lock_run(tx, run_id)
        row = tx.one(_STEP_ROW, row_id=row_id)
        if run is None or row is None or (token is not None and row.lease_token != token):
            return
        parent = row if row.item == NO_ITEM else tx.one(f"{_TOP_ROWS} AND step_id = :step_id", run_id=run_id,
                                                        step_id=row.step_id)
        _record_failure(tx, run, row, parent, exc)


def _record_failure(tx: Tx, run: LockedRun, row: Any, parent: Any, exc: BaseException) -> None:
    now = utcnow()
    message = describe(exc)
    label = row.step_id + (f"[{row.item}]" if row.item >= 0 else "")
    for target in {row.id, parent.id}:
        tx.update("step_runs", target, status=StepStatus.failed.value, error=message, finished_at=now,
                  lease_token=None, lease_expires_at=None)
    run.event(tx, "step.failed", step_id=row.step_id,
              payload={"attempt": row.attempts, "error": message, **({"item": row.item} if row.item >= 0 else {})})
    changes: dict[str, Any] = {}
    if run.status not in TERMINAL_RUN:
        changes = {"status": RunStatus.failed.value, "error": f"step {label} failed: {message}"}
        run.event(tx, "run.failed", payload={"step": label, "error": message})
    run.save(tx, **changes)


def park_step(run_id: str, row_id: str, token: str, park: Park) -> bool:
    """Leave the step waiting: no lease, no worker; the run waits unless other branches still run."""
    with rawsql.transaction() as tx:
        held = _held_row(tx, run_id, row_id, token)
        if held is None:
            return False
        run, row = held
        tx.update("step_runs", row.id, status=StepStatus.waiting.value, lease_token=None, lease_expires_at=None)
        run.event(tx, park.event, step_id=row.step_id, payload=park.audit)
        run.save(tx, **({} if run.status in TERMINAL_RUN else {"status": RunStatus.waiting.value}))
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
        # NaN and Infinity are not JSON, and an unpaired surrogate is not text: PostgreSQL refuses all three.
        text = json.dumps(output, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise StepError(f"the step returned something that is not JSON ({exc}); return dicts, lists, str, "
                        "numbers, bools or None", retryable=False) from exc
    if len(text) > MAX_OUTPUT_BYTES:
        raise StepError(f"the step's output is {len(text)} bytes, over the {MAX_OUTPUT_BYTES} byte limit; "
                        "store large data elsewhere and return a reference", retryable=False)
    return output


def execute(task: Task, claim: Claim, finish: bool = False) -> bool:
    """Run a claimed step and record what happened. True if it succeeded and that was recorded."""
    call = claim.call
    assert call is not None
    leases.hold(call.execution_id, claim.token)
    try:
        output = _serialisable(get_kind(call.step.kind).execute(call))
    except Park as park:
        park_step(call.run_id, call.execution_id, claim.token, park)
        return False
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, typed or not
        _handle_failure(task, call, claim.token, exc)
        return False
    finally:
        leases.release(call.execution_id)
    return complete_step(call.run_id, call.execution_id, claim.token, output, finish=finish, held=claim.held)


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

    ``finish`` marks the canvas's last step, which then ends the run itself:
    in the transaction that records its output when it succeeds.
    """
    claim = claim_step(run_id, step_id, item)
    if claim.outcome == Outcome.RUN and execute(self, claim, finish=finish):
        return
    if claim.outcome == Outcome.FANOUT:
        assert claim.spec is not None
        raise self.replace(fanout_canvas(claim.spec, run_id, step_id, claim.items))
    if finish:
        finish_run(run_id)


@shared_task(name="orchestra.collect", acks_late=True)
def collect_fanout(run_id: str, step_id: str) -> None:
    """Join a fan-out: the parent step succeeds with its items' outputs, in order."""
    with rawsql.transaction() as tx:
        run = lock_run(tx, run_id)
        if run is None or run.status in TERMINAL_RUN:
            return
        rows = tx.all(f"SELECT {_STEP_COLUMNS} FROM step_runs WHERE run_id = :run_id AND step_id = :step_id "
                      "ORDER BY item", run_id=run_id, step_id=step_id)
        parent = next((r for r in rows if r.item == NO_ITEM), None)
        items = [r for r in rows if r.item >= 0]
        if parent is None or parent.status != StepStatus.running.value:
            return
        if any(r.status not in DONE_STEP for r in items):
            return
        tx.update("step_runs", parent.id, status=StepStatus.succeeded.value, output=[r.output for r in items],
                  finished_at=utcnow())
        run.event(tx, "step.succeeded", step_id=step_id, payload={"items": len(items)})
        run.save(tx)


@shared_task(name="orchestra.advance", acks_late=True)
def advance_run(run_id: str) -> None:
    """End of a segment, or a run handed over by ``runs.enqueue``: compile and send what remains."""
    dispatch_run(run_id)


@shared_task(name="orchestra.finish", acks_late=True)
def finish_run(run_id: str) -> None:
    """End the run if every step has ended; otherwise leave it to whoever finishes last."""
    with rawsql.transaction() as tx:
        run = lock_run(tx, run_id)
        if run is not None and run.status not in TERMINAL_RUN:
            _finish(tx, run)


def _finish(tx: Tx, run: LockedRun, ended: Record | None = None) -> None:
    """End the run if all its steps have ended; ``ended`` is a step row as this transaction left it."""
    rows = [ended if ended is not None and r.id == ended.id else r for r in tx.all(_TOP_ROWS, run_id=run.id)]
    statuses = {r.status for r in rows}
    if statuses <= {s.value for s in DONE_STEP}:
        _succeed_run(tx, run, rows)
    elif StepStatus.waiting.value in statuses and not statuses & {StepStatus.running.value}:
        run.save(tx, status=RunStatus.waiting.value)


def _succeed_run(tx: Tx, run: LockedRun, rows: list[Any]) -> None:
    spec = get_workflow(run.workflow, run.version)
    try:
        output = templates.render(spec.outputs, step_context(run, rows)) if spec.outputs else None
    except TemplateError as exc:
        run.event(tx, "run.failed", payload={"error": f"outputs: {exc.message}"})
        run.save(tx, status=RunStatus.failed.value, error=f"outputs: {exc.message}")
        return
    duration = (utcnow() - run.created_at).total_seconds()
    run.event(tx, "run.succeeded", payload={"duration_s": duration})
    run.save(tx, status=RunStatus.succeeded.value, output=output)


__all__ = ["run_step", "collect_fanout", "advance_run", "finish_run", "claim_step"]
