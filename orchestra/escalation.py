"""Deadlines: what happens when a wait's deadline passes.

The sweeper (``sweep_deadlines``) hands each due wait to ``apply_deadline``
exactly once. For a human task it applies the step's ``escalate`` chain in order:

- ``{after, to}`` reassigns the task to ``to`` at ``level + 1`` and notifies them;
- ``{after, action: approve|reject|fail}`` ends the wait, claiming the decision
  like a person would so a concurrent human decision and the escalation never
  both win.

With the chain exhausted (or none) and a ``timeout``, the step fails with a
timeout error. A signal wait past its ``timeout`` fails its step. Every
escalation is audited.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from orchestra import db, notify, transitions, waits
from orchestra.decisions import locked, settle
from orchestra.errors import WaitError
from orchestra.models import HumanTask, SignalWait, TaskStatus, utcnow
from orchestra.signals import expire_signal_wait
from orchestra.steps.human import next_deadline

log = logging.getLogger(__name__)

ESCALATION_ACTOR = "system:escalation"
EARLY = timedelta(milliseconds=50)  # clock skew between processes


def apply_deadline(wait_id: str) -> str:
    """Apply the due deadline of one wait; returns what was done (for logs and tests)."""
    with db.read_session() as session:
        task = session.get(HumanTask, wait_id)
        signal_wait = None if task is not None else session.get(SignalWait, wait_id)
    if task is None:
        if signal_wait is not None and expire_signal_wait(wait_id):
            return "timed_out"
        waits.drop_wait(wait_id)
        return "gone"
    if task.status != TaskStatus.open.value:
        waits.drop_wait(wait_id)
        return "gone"
    if task.deadline is None or task.deadline > utcnow() + EARLY:
        waits.store_wait(task.id, waits.HUMAN, task.run_id, task.step_id, level=task.level,
                         payload_hash=task.payload_hash, deadline=task.deadline)
        return "rescheduled"
    chain = (task.policy or {}).get("escalate") or []
    try:
        if task.level < len(chain):
            entry = chain[task.level]
            if "to" in entry:
                return escalate(task, list(entry["to"]))
            return end_wait(task, str(entry["action"]), float(entry["after"]))
        return time_out(task)
    except WaitError as exc:  # decided or closed meanwhile: nothing left to do
        log.info("deadline of task %s: %s", task.id, exc.message)
        waits.drop_wait(wait_id)
        return "gone"


def escalate(task: HumanTask, assignees: list[str]) -> str:
    """Reassign ``task`` to ``assignees`` at the next level and notify them."""
    with db.write_session() as session:
        held = locked(session, task)
        fresh = held.task
        previous, level = list(fresh.assignees or []), fresh.level + 1
        fresh.assignees, fresh.level = assignees, level
        fresh.deadline = next_deadline(fresh.policy or {}, level, fresh.created_at)
        transitions.note(held.tx, held.run, "human.escalated", actor=ESCALATION_ACTOR, step_id=fresh.step_id,
                         payload={"task_id": fresh.id, "from_level": level - 1, "level": level, "assignees": assignees,
                              "previous_assignees": previous,
                              "deadline": fresh.deadline.isoformat() if fresh.deadline else None})
        deadline = fresh.deadline
    waits.store_wait(task.id, waits.HUMAN, task.run_id, task.step_id, level=level, payload_hash=task.payload_hash,
                     deadline=deadline)
    notify.enqueue(task.id, "escalated")
    return "escalated"


def _audit_escalation(task: HumanTask, action: str, after: float | None) -> None:
    with db.write_session() as session:
        held = locked(session, task)
        transitions.note(held.tx, held.run, "human.escalated", actor=ESCALATION_ACTOR, step_id=held.task.step_id,
                         payload={"task_id": held.task.id, "level": held.task.level, "action": action,
                                  "after_s": after})


def _claim_for_system(task: HumanTask, action: str) -> bool:
    claim = waits.claim_decision(task.id, ESCALATION_ACTOR, action, 1, utcnow())
    if claim.outcome == "missing" and waits.restore_wait(task.id):
        claim = waits.claim_decision(task.id, ESCALATION_ACTOR, action, 1, utcnow())
    return claim.outcome == "won"


def end_wait(task: HumanTask, action: str, after: float) -> str:
    """An ``{after, action}`` entry: approve or reject on nobody's behalf, or fail the step."""
    if not _claim_for_system(task, "reject" if action == "fail" else action):
        return "lost"
    try:
        _audit_escalation(task, action, after)
    except Exception:
        waits.release_claim(task.id, ESCALATION_ACTOR)
        raise
    reason = f"no decision within {after:g}s; the escalation chain ends with `{action}`"
    if action == "fail":
        return _expire(task, reason)
    settle(task, ESCALATION_ACTOR, action, comment=reason, reason=reason)
    return f"auto_{action}"


def time_out(task: HumanTask) -> str:
    """No escalation left and the ``timeout`` passed: the step fails with a timeout error."""
    if not _claim_for_system(task, "reject"):
        return "lost"
    timeout = (task.policy or {}).get("timeout")
    return _expire(task, f"human step timed out: no decision within its timeout of {timeout:g}s"
                   if timeout is not None else "human step timed out")


def _expire(task: HumanTask, reason: str) -> str:
    try:
        with db.write_session() as session:
            held = locked(session, task)
            fresh = held.task
            fresh.status, fresh.closed_at = TaskStatus.expired.value, utcnow()
            fresh.decided_by, fresh.output = ESCALATION_ACTOR, {"reason": reason}
            tx = transitions.within(session)  # flushed: the task is expired before the run's open waits close
            transitions.note(tx, held.run, "human.expired", actor=ESCALATION_ACTOR, step_id=fresh.step_id,
                             payload={"task_id": fresh.id, "level": fresh.level, "reason": reason})
            closed = transitions.fail_waiting(tx, held.run, held.row.id, reason)
    except Exception:
        waits.release_claim(task.id, ESCALATION_ACTOR)
        raise
    waits.after_resume(task.run_id, task.id, dispatch=False, closed=closed)
    return "expired"


def sweep_deadlines() -> int:
    """A sweep hook: apply every due deadline (escalate, end the wait, or time out); returns how many."""
    due = waits.claim_due()
    for wait_id in due:
        try:
            apply_deadline(wait_id)
        except Exception:  # noqa: BLE001 - one bad wait must not stop the others; it is retried after DUE_LEASE
            log.exception("deadline of wait %s failed; it will be retried", wait_id)
    return len(due)


__all__ = ["sweep_deadlines", "apply_deadline", "escalate", "end_wait", "time_out"]
