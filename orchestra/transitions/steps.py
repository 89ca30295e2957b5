"""Step and item transitions: claim (start, skip, fan out, abandon), succeed, retry, hold back, park, fail, collect.

Each verb is one transaction on the step runtime's fast path (``orchestra.rawsql``)
and writes the status change together with its audit events. ``journal`` is what
the step's connectors recorded while it ran (``StepCall.record``); it is written
in the same transaction as the step's outcome, so a step still costs two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from orchestra import leases, rawsql, templates
from orchestra.errors import TemplateError
from orchestra.ids import new_id
from orchestra.models import DONE_STEP, NO_ITEM, TERMINAL_RUN, StepStatus, utcnow
from orchestra.rawsql import Tx
from orchestra.settings import get_settings
from orchestra.spec import Step, WorkflowSpec
from orchestra.transitions import rules
from orchestra.transitions.ends import end_run, finish
from orchestra.transitions.rows import STEP_COLUMNS, Outcome, RunRow, StepRow
from orchestra.catalog import get_workflow

Journal = list[dict[str, Any]]  # audit events a step's connectors recorded: {type, actor, step_id, payload}

_LOCK_RUN = ("SELECT id, workflow, version, status, input, submitted_by, created_at, audit_seq, audit_hash "
             "FROM runs WHERE id = :run_id")
_STEP_ROW = f"SELECT {STEP_COLUMNS} FROM step_runs WHERE id = :row_id"
_PARENT_ROW = f"SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = :run_id AND step_id = :step_id AND item = -1"


@dataclass
class Claim:
    """What a claim decided, and for ``RUN`` what the step needs to run."""

    outcome: Outcome
    row: StepRow | None = None  # for RUN: the row as the claim left it
    run: RunRow | None = None  # for RUN: the run as the claim left it (a blind completion starts from it)
    spec: WorkflowSpec | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the rendered `with`
    context: dict[str, Any] = field(default_factory=dict)
    token: str = ""
    items: int = 0  # for FANOUT
    closed_waits: list[str] = field(default_factory=list)  # the run ended: these waits leave Redis


def lock_run(tx: Tx, run_id: str) -> RunRow | None:
    row = tx.lock(_LOCK_RUN, run_id=run_id)
    return None if row is None else RunRow.from_record(row)


@lru_cache(maxsize=64)
def _rows_for(count: int) -> str:
    """A step's own row (or item row), its parent, and the ``count`` top-level rows it reads."""
    wanted = ", ".join(f":w{i}" for i in range(count))
    return (f"SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = :run_id AND step_id IN ({wanted}) "
            "AND (item = -1 OR (step_id = :step_id AND item = :item))")


def _load_rows(tx: Tx, run_id: str, spec: WorkflowSpec, step_id: str, item: int) -> dict[tuple[str, int], StepRow]:
    step = spec.by_id[step_id]
    wanted = sorted(set(step.needs or []) | spec.reads[step_id] | {step_id})
    params = {f"w{i}": sid for i, sid in enumerate(wanted)}
    rows = tx.all(_rows_for(len(wanted)), run_id=run_id, step_id=step_id, item=item, **params)
    return {(r.step_id, r.item): StepRow.from_record(r) for r in rows}


# -- claim ---------------------------------------------------------------------------------------------------------
def claim(run_id: str, step_id: str, item: int) -> Claim:
    """Decide, in one transaction, whether this message runs the step."""
    return rawsql.optimistic(lambda tx: _plan_claim(tx, run_id, step_id, item))


def _plan_claim(tx: Tx, run_id: str, step_id: str, item: int) -> Claim:
    run = lock_run(tx, run_id)
    if run is None or run.status in TERMINAL_RUN:
        return Claim(Outcome.PASS)
    spec = get_workflow(run.workflow, run.version)
    step = spec.by_id[step_id]
    rows = _load_rows(tx, run_id, spec, step_id, item)
    row, parent = rows.get((step_id, item)), rows.get((step_id, NO_ITEM))
    if row is None or parent is None:
        return Claim(Outcome.PASS)
    if row.status in DONE_STEP:
        return Claim(Outcome.DONE)
    if not _claimable(row) or any(rows.get((n, NO_ITEM)) is None or rows[(n, NO_ITEM)].status not in DONE_STEP
                                  for n in step.needs or []):
        return Claim(Outcome.PASS)
    if row.is_item and parent.status != StepStatus.running.value:
        return Claim(Outcome.PASS)
    # A running fan-out parent holds no lease of its own: claiming it again only re-sends its open items.
    lapsed = row.status == StepStatus.running.value and (row.is_item or not step.for_each)
    if lapsed and row.recoveries + 1 >= get_settings().max_recoveries:
        return _abandon(tx, run, row, parent)
    context = templates.step_context(run, rows.values(), row.input if row.is_item else None)
    try:
        return _claim_ready(tx, run, spec, step, row, context)
    except TemplateError as exc:
        return Claim(Outcome.PASS, closed_waits=fail_rows(tx, run, row, parent, exc.message))


def _claimable(row: StepRow) -> bool:
    if row.status == StepStatus.pending.value:
        return True
    if row.status == StepStatus.running.value:  # its lease lapsed: the worker that held it died
        return row.lease_expires_at is None or row.lease_expires_at <= utcnow()
    return False


def _abandon(tx: Tx, run: RunRow, row: StepRow, parent: StepRow) -> Claim:
    """The step's worker died ``max_recoveries`` times running it: fail it instead of trying again."""
    deaths = row.recoveries + 1
    message = (f"the worker running step {row.label} died {deaths} times (its lease lapsed each time), so it is "
               "abandoned; look in the worker logs and `dmesg` for the kill (out of memory, a crash, os._exit) "
               "around its start times in `orchestra audit`, fix the step, then `orchestra retry`")
    rules.step("abandon", row.label, row.status)
    return Claim(Outcome.DONE, closed_waits=fail_rows(tx, run, row.but(recoveries=deaths), parent, message,
                                                      event="step.abandoned", guard=row.as_read()))


def _claim_ready(tx: Tx, run: RunRow, spec: WorkflowSpec, step: Step, row: StepRow,
                 context: dict[str, Any]) -> Claim:
    now = utcnow()
    if run.status == "pending":
        run.event(tx, "run.started", payload={"workflow": run.workflow, "version": run.version})
    run_status = rules.run("start", run.id, run.status)
    if not row.is_item and step.if_ and not templates.evaluate(step.if_, context):
        tx.update("step_runs", row.id, guard=row.as_read(), status=rules.step("skip", row.label, row.status),
                  finished_at=now)
        run.event(tx, "step.skipped", step_id=step.id, payload={"if": step.if_})
        run.save(tx, status=run_status)
        return Claim(Outcome.DONE)
    if not row.is_item and step.for_each:
        return _fan_out(tx, run, spec, step, row, context)
    params = templates.render(step.with_, context)
    token, attempt = new_id(), row.attempts + 1
    lapsed = row.status == StepStatus.running.value
    recoveries = row.recoveries + 1 if lapsed else row.recoveries
    started = row.started_at or now
    # An item's `input` is its own value, which every later attempt reads back: only a step's holds its `with`.
    values: dict[str, Any] = {} if row.is_item else {"input": params}
    tx.update("step_runs", row.id, guard=row.as_read(), status=rules.step("start", row.label, row.status),
              attempts=attempt, recoveries=recoveries, started_at=started, lease_token=token,
              lease_expires_at=leases.expiry(), **values)
    run.event(tx, "step.started", step_id=step.id, payload={
        "attempt": attempt, **row.item_field(), **({"recovered": recoveries} if lapsed else {})})
    run.save(tx, status=run_status)
    held = row.but(status=StepStatus.running.value, attempts=attempt, recoveries=recoveries, started_at=started,
                   lease_token=token)
    return Claim(Outcome.RUN, row=held, run=run, spec=spec, params=params, context=context, token=token)


def _fan_out(tx: Tx, run: RunRow, spec: WorkflowSpec, step: Step, row: StepRow, context: dict[str, Any]) -> Claim:
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
              "attempts": 0, "recoveries": 0, "input": value} for i, value in enumerate(items) if i not in existing]
    if fresh:
        tx.insert("step_runs", fresh)
    run.event(tx, "step.started", step_id=step.id, payload={"items": len(items)})
    values: dict[str, Any] = {"status": rules.step("fan out", row.label, row.status),
                              "started_at": row.started_at or now, "attempts": row.attempts + 1,
                              "input": {"items": len(items)}}
    if not items:
        values.update(status=StepStatus.succeeded.value, output=[], finished_at=now)
        run.event(tx, "step.succeeded", step_id=step.id, payload={"items": 0})
    tx.update("step_runs", row.id, guard=row.as_read(), **values)
    run.save(tx, status=rules.run("start", run.id, run.status))
    return Claim(Outcome.FANOUT, items=len(items), spec=spec) if items else Claim(Outcome.DONE)


# -- a claimed step's outcome --------------------------------------------------------------------------------------
def _held(tx: Tx, run_id: str, row_id: str, token: str) -> tuple[RunRow, StepRow] | None:
    """The locked run and the step row, if this worker's lease on the row still holds."""
    run = lock_run(tx, run_id)
    found = tx.one(_STEP_ROW, row_id=row_id)
    if run is None or found is None or found.lease_token != token:
        return None
    return run, StepRow.from_record(found)


def _write_journal(tx: Tx, run: RunRow, journal: Journal) -> None:
    for entry in journal:
        run.event(tx, entry["type"], actor=entry["actor"], step_id=entry["step_id"], payload=entry["payload"])


def succeed(claimed: Claim, output: Any, journal: Journal, finish_run: bool = False) -> bool:
    """Record a step's output, and with ``finish_run`` end the run if this was its last open step.

    Nothing else usually touches the run while its step runs, so the completion
    is first written from what the claim left, unread, guarded on the run's audit
    head and the lease. False if the lease was lost meanwhile (another worker, a cancel).
    """
    assert claimed.row is not None and claimed.run is not None
    row, run, token = claimed.row, claimed.run, claimed.token

    def read_and_plan(tx: Tx) -> bool:
        found = _held(tx, run.id, row.id, token)
        if found is None or found[1].status != StepStatus.running.value:
            return False
        return _plan_success(tx, found[0], found[1], token, output, journal, finish_run)

    blind = None
    if not finish_run:  # ending the run reads every step's row
        blind = lambda tx: _plan_success(tx, run.copy(), row, token, output, journal, False)  # noqa: E731
    return rawsql.optimistic(read_and_plan, blind=blind)


def _plan_success(tx: Tx, run: RunRow, row: StepRow, token: str, output: Any, journal: Journal,
                  finish_run: bool) -> bool:
    now = utcnow()
    _write_journal(tx, run, journal)
    status = rules.step("succeed", row.label, row.status)
    tx.update("step_runs", row.id, guard={"status": StepStatus.running.value, "lease_token": token},
              status=status, output=output, error=None, finished_at=now, lease_token=None, lease_expires_at=None)
    duration = (now - row.started_at).total_seconds() if row.started_at else None
    run.event(tx, "step.succeeded", step_id=row.step_id,
              payload={"attempt": row.attempts, "duration_s": duration, **row.item_field()})
    run.save(tx)
    if finish_run and run.status not in TERMINAL_RUN:
        # The snapshot this plan reads from does not hold its own writes yet: tell finish what just ended.
        finish(tx, run, ended=row.but(status=status, output=output))
    return True


def retry(run_id: str, row_id: str, token: str, error: str, delay: float, journal: Journal) -> bool:
    """Put a failed attempt back to pending; the lease covers the backoff so the sweeper leaves it alone."""
    with rawsql.transaction() as tx:
        held = _held(tx, run_id, row_id, token)
        if held is None:
            return False
        run, row = held
        _write_journal(tx, run, journal)
        tx.update("step_runs", row.id, status=rules.step("retry", row.label, row.status), error=error,
                  lease_expires_at=leases.expiry(delay))
        run.event(tx, "step.retrying", step_id=row.step_id,
                  payload={"attempt": row.attempts, "error": error, "delay_s": delay, **row.item_field()})
        run.save(tx)
    return True


def hold_back(run_id: str, row_id: str, token: str, delay: float, journal: Journal) -> bool:
    """A connector said "not yet" (rate limit): give the attempt back and wait, holding no worker."""
    with rawsql.transaction() as tx:
        held = _held(tx, run_id, row_id, token)
        if held is None:
            return False
        run, row = held
        tx.update("step_runs", row_id, status=rules.step("hold back", row.label, row.status),
                  attempts=max(0, row.attempts - 1), lease_expires_at=leases.expiry(delay))
        if journal:
            _write_journal(tx, run, journal)
            run.save(tx)
    return True


def park(run_id: str, row_id: str, token: str, event: str, audit: dict[str, Any], journal: Journal) -> bool:
    """Leave the step waiting: no lease, no worker; the run waits unless other branches still run."""
    with rawsql.transaction() as tx:
        held = _held(tx, run_id, row_id, token)
        if held is None:
            return False
        run, row = held
        _write_journal(tx, run, journal)
        tx.update("step_runs", row.id, status=rules.step("park", row.label, row.status), lease_token=None,
                  lease_expires_at=None)
        run.event(tx, event, step_id=row.step_id, payload=audit)
        run.save(tx, **({} if run.status in TERMINAL_RUN else {"status": rules.run("park", run.id, run.status)}))
    return True


def fail(run_id: str, row_id: str, token: str | None, message: str, journal: Journal) -> list[str] | None:
    """The last attempt failed: the step (and its parent), then the run, fail. Returns the waits it closed.

    None if this worker no longer holds the step (its lease went to another worker, or the run was cancelled).
    """
    with rawsql.transaction() as tx:
        run = lock_run(tx, run_id)
        found = tx.one(_STEP_ROW, row_id=row_id)
        if run is None or found is None or (token is not None and found.lease_token != token):
            return None
        row = StepRow.from_record(found)
        _write_journal(tx, run, journal)
        parent = row if not row.is_item else StepRow.from_record(
            tx.one(_PARENT_ROW, run_id=run_id, step_id=row.step_id))  # type: ignore[arg-type]
        return fail_rows(tx, run, row, parent, message)


def fail_rows(tx: Tx, run: RunRow, row: StepRow, parent: StepRow, message: str, *, event: str = "step.failed",
              guard: dict[str, Any] | None = None) -> list[str]:
    """Fail ``row``, and its fan-out ``parent`` with it, then end the run failed. Returns the waits it closed."""
    now = utcnow()
    status = rules.step("fail", row.label, row.status) if event == "step.failed" else StepStatus.failed.value
    for target in {row.id: row, parent.id: parent}.values():
        tx.update("step_runs", target.id, guard=guard if target is row else None, status=status, error=message,
                  finished_at=now, lease_token=None, lease_expires_at=None,
                  **({"recoveries": row.recoveries} if target is row else {}))
    run.event(tx, event, step_id=row.step_id,
              payload={"attempt": row.attempts, "error": message, **row.item_field(),
                       **({"deaths": row.recoveries} if event == "step.abandoned" else {})})
    if run.status in TERMINAL_RUN:
        run.save(tx)
        return []
    return end_run(tx, run, "fail", error=f"step {row.label} failed: {message}", skip={row.id, parent.id},
                   payload={"step": row.label, "error": message})


def collect(run_id: str, step_id: str) -> None:
    """Join a fan-out: the parent step succeeds with its items' outputs, in order."""
    with rawsql.transaction() as tx:
        run = lock_run(tx, run_id)
        if run is None or run.status in TERMINAL_RUN:
            return
        rows = [StepRow.from_record(r) for r in tx.all(
            f"SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = :run_id AND step_id = :step_id ORDER BY item",
            run_id=run_id, step_id=step_id)]
        parent = next((r for r in rows if not r.is_item), None)
        items = [r for r in rows if r.is_item]
        if parent is None or parent.status != StepStatus.running.value:
            return
        if any(r.status not in DONE_STEP for r in items):
            return
        tx.update("step_runs", parent.id, status=rules.step("succeed", parent.label, parent.status),
                  output=[r.output for r in items], finished_at=utcnow())
        run.event(tx, "step.succeeded", step_id=step_id, payload={"items": len(items)})
        run.save(tx)


def finish_run(run_id: str) -> None:
    """End the run if every step has ended; otherwise leave it to whoever finishes last."""
    with rawsql.transaction() as tx:
        run = lock_run(tx, run_id)
        if run is not None and run.status not in TERMINAL_RUN:
            finish(tx, run)
