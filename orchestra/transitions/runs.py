"""Run transitions made beside other writes: submit, resume or fail a waiting step, cancel, retry, and notes.

These verbs run inside a transaction their caller already holds, because they
go with writes of the caller's own (a decision row, a signal, a human task):
``within(session)`` gives a ``Tx`` on an ORM session's own connection. ``note``
appends an event that changes no status (``human.voted``, ``signal.received``);
``audit`` does the same in a transaction of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestra import rawsql
from orchestra.errors import NotFound
from orchestra.ids import new_id
from orchestra.models import NO_ITEM, StepStatus, utcnow
from orchestra.rawsql import Tx
from orchestra.transitions import rules
from orchestra.transitions.ends import end_run
from orchestra.transitions.rows import STEP_COLUMNS, RunRow, StepRow
from orchestra.transitions.steps import _PARENT_ROW, _STEP_ROW, fail_rows, lock_run

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def within(session: Session) -> Tx:
    """A ``Tx`` on ``session``'s connection, inside its transaction; the session is flushed first."""
    session.flush()
    connection = session.connection()
    return Tx(connection.connection.cursor(), rawsql.dialect_of(connection.engine))


def locked(tx: Tx, run_id: str) -> RunRow:
    """The run, locked for ``tx`` (on PostgreSQL ``FOR UPDATE``)."""
    run = lock_run(tx, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}; list runs with `orchestra runs`")
    return run


def note(tx: Tx, run: RunRow, type: str, *, actor: str = "system", step_id: str | None = None,
         payload: dict[str, Any] | None = None) -> None:
    """Append one event that changes no status to ``run``'s chain."""
    run.event(tx, type, actor=actor, step_id=step_id, payload=payload)
    run.save(tx)


def audit(run_id: str, type: str, *, actor: str = "system", step_id: str | None = None,
          payload: dict[str, Any] | None = None) -> bool:
    """``note`` in a transaction of its own; False if the run is gone."""
    with rawsql.transaction() as tx:
        run = lock_run(tx, run_id)
        if run is None:
            return False
        note(tx, run, type, actor=actor, step_id=step_id, payload=payload)
    return True


def submitted(tx: Tx, run: RunRow, step_ids: list[str], actor: str, payload: dict[str, Any]) -> None:
    """A new run's step rows and its ``run.submitted`` event (the run row itself is the caller's insert)."""
    tx.insert("step_runs", [{"id": new_id(), "run_id": run.id, "step_id": sid, "item": NO_ITEM,
                             "status": StepStatus.pending.value, "attempts": 0, "recoveries": 0}
                            for sid in step_ids])
    note(tx, run, "run.submitted", actor=actor, payload=payload)


def _row(tx: Tx, row_id: str) -> StepRow:
    found = tx.one(_STEP_ROW, row_id=row_id)
    if found is None:
        raise NotFound(f"no step row {row_id}")
    return StepRow.from_record(found)


def resume(tx: Tx, run: RunRow, row_id: str, output: Any, *, actor: str = "system") -> None:
    """A waiting step succeeds with ``output`` (a decision, a signal) and its run runs again."""
    row = _row(tx, row_id)
    tx.update("step_runs", row.id, status=rules.step("succeed", row.label, row.status), output=output, error=None,
              finished_at=utcnow())
    run.event(tx, "step.succeeded", actor=actor, step_id=row.step_id,
              payload={"attempt": row.attempts, **row.item_field()})
    run.save(tx, status=rules.run("resume", run.id, run.status))


def fail_waiting(tx: Tx, run: RunRow, row_id: str, message: str) -> list[str]:
    """A waiting step fails (a reject with ``on_reject: fail``, a deadline), with its parent and its run."""
    row = _row(tx, row_id)
    parent = row if not row.is_item else StepRow.from_record(
        tx.one(_PARENT_ROW, run_id=run.id, step_id=row.step_id))  # type: ignore[arg-type]
    return fail_rows(tx, run, row, parent, message)


def cancel(tx: Tx, run: RunRow, *, actor: str, reason: str) -> list[str]:
    """Cancel the run: every open step row is cancelled and its waits close; returns the waits' ids."""
    return end_run(tx, run, "cancel", error=reason or f"cancelled by {actor}", payload={"reason": reason},
                   actor=actor)


def retry(tx: Tx, run: RunRow, *, actor: str) -> list[str]:
    """Resume a failed run: its failed and cancelled rows go back to pending; returns their labels."""
    status = rules.run("retry", run.id, run.status)
    rows = [StepRow.from_record(r) for r in tx.all(
        f"SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = :run_id AND status IN ('failed', 'cancelled')",
        run_id=run.id)]
    for row in rows:
        tx.update("step_runs", row.id, status=rules.step("reset", row.label, row.status), error=None, attempts=0,
                  recoveries=0, lease_token=None, lease_expires_at=None, finished_at=None)
    labels = sorted({row.label for row in rows if row.status == StepStatus.failed.value})
    run.event(tx, "run.retried", actor=actor, payload={"steps": labels})
    run.save(tx, status=status, error=None)
    return labels
