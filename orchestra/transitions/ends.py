"""How a run ends: it succeeds once every step has ended well; failing or cancelling it closes what was open.

When a run fails or is cancelled, no step of it may stay ``running`` or
``waiting``: those rows become ``cancelled`` (a worker still running one loses
its lease, so its result is refused, and its heartbeat abandons it), and the
run's open human tasks and signal waits close. On cancel its ``pending`` rows
are cancelled too; on failure they stay ``pending`` for ``orchestra retry``.
The caller drops the closed waits from Redis once the transaction commits.
"""

from __future__ import annotations

from typing import Any

from orchestra import templates
from orchestra.errors import TemplateError
from orchestra.models import DONE_STEP, StepStatus, TaskStatus, utcnow
from orchestra.rawsql import Tx
from orchestra.transitions import rules
from orchestra.transitions.rows import STEP_COLUMNS, RunRow, StepRow
from orchestra.catalog import get_workflow

_TOP_ROWS = f"SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = :run_id AND item = -1"
_OPEN_ROWS = f"SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = :run_id AND status IN ('running', 'waiting'"
_WAIT_TABLES = ("human_tasks", "signal_waits")


def end_run(tx: Tx, run: RunRow, rule: str, *, error: str, payload: dict[str, Any], actor: str = "system",
            skip: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """End ``run`` by ``rule`` (``fail`` or ``cancel``), closing its open rows and waits; returns the waits' ids.

    ``skip`` names rows the caller has already ended in this transaction.
    """
    status = rules.run(rule, run.id, run.status)
    now = utcnow()
    include_pending = rule == "cancel"
    sql = _OPEN_ROWS + (", 'pending')" if include_pending else ")")
    open_rows = [StepRow.from_record(r) for r in tx.all(sql, run_id=run.id)]
    for row in open_rows:
        if row.id in skip:
            continue
        tx.update("step_runs", row.id, status=rules.step("cancel", row.label, row.status), finished_at=now,
                  lease_token=None, lease_expires_at=None)
        if row.status != StepStatus.pending.value:
            run.event(tx, "step.cancelled", actor=actor, step_id=row.step_id,
                      payload={"was": row.status, "reason": f"run {rule}ed" if rule == "fail" else "run cancelled",
                               **row.item_field()})
    closed = _close_waits(tx, run.id, now)
    if closed:
        run.event(tx, "wait.closed", actor=actor, payload={"waits": closed, "reason": f"run {status}"})
    run.event(tx, f"run.{status}", actor=actor, payload=payload)
    run.save(tx, status=status, error=error)
    return closed


def _close_waits(tx: Tx, run_id: str, now: Any) -> list[str]:
    ids: list[str] = []
    for table in _WAIT_TABLES:
        found = [r.id for r in tx.all(f"SELECT id FROM {table} WHERE run_id = :run_id AND status = 'open'",
                                      run_id=run_id)]
        if found:
            tx.execute(f"UPDATE {table} SET status = :status, closed_at = :closed_at "
                       "WHERE run_id = :run_id AND status = 'open'",
                       status=TaskStatus.cancelled.value, closed_at=now, run_id=run_id)
            ids.extend(found)
    return ids


def finish(tx: Tx, run: RunRow, ended: StepRow | None = None) -> None:
    """End the run if all its steps have ended; ``ended`` is a step row as this transaction left it."""
    rows = [StepRow.from_record(r) for r in tx.all(_TOP_ROWS, run_id=run.id)]
    rows = [ended if ended is not None and r.id == ended.id else r for r in rows]
    statuses = {r.status for r in rows}
    if statuses <= {s.value for s in DONE_STEP}:
        _succeed_run(tx, run, rows)
    elif StepStatus.waiting.value in statuses and not statuses & {StepStatus.running.value}:
        run.save(tx, status=rules.run("park", run.id, run.status))


def _succeed_run(tx: Tx, run: RunRow, rows: list[StepRow]) -> None:
    spec = get_workflow(run.workflow, run.version)
    try:
        output = templates.render(spec.outputs, templates.step_context(run, rows)) if spec.outputs else None
    except TemplateError as exc:
        end_run(tx, run, "fail", error=f"outputs: {exc.message}", payload={"error": f"outputs: {exc.message}"})
        return
    duration = (utcnow() - run.created_at).total_seconds()
    run.event(tx, "run.succeeded", payload={"duration_s": duration})
    run.save(tx, status=rules.run("succeed", run.id, run.status), output=output)
