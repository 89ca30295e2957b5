"""``uses: human``: park the run until an approver decides.

The step opens a human task (a row in ``human_tasks``) that records exactly what
the approver is shown, and the hash of it, then raises ``Park``. Once the
waiting state is committed the wait is written to Redis and the assignees are
notified. ``orchestra.decisions.decide`` resumes the step.

``with`` fields: ``title``, ``body``, ``assignees`` (users and ``group:`` names),
``form`` (JSON Schema), ``show`` (data the approver sees and the decision binds
to), ``timeout``, ``escalate`` (``[{after, to}|{after, action}]``), ``quorum``
and ``four_eyes``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from orchestra import db
from orchestra.errors import StepError
from orchestra.ids import new_id
from orchestra.models import TERMINAL_RUN, HumanTask, Run, TaskStatus, utcnow
from orchestra.spec import parse_duration
from orchestra.steps.base import Park, StepCall, StepKind


def payload_digest(shown: Any) -> str:
    """The hash a decision binds to: canonical JSON of what the approver is shown."""
    return hashlib.sha256(json.dumps(shown, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def shown_payload(params: dict[str, Any], default_title: str) -> dict[str, Any]:
    """What the approver sees, from the step's rendered ``with``."""
    return {"title": str(params.get("title") or default_title), "body": params.get("body"), "show": params.get("show")}


def task_policy(call: StepCall) -> dict[str, Any]:
    """Quorum, four-eyes, timeout and escalation chain, normalised to seconds."""
    params = call.params
    # A step-level `timeout` bounds a human step's wait; on other kinds it bounds their call, not the person.
    timeout = params.get("timeout", call.step.timeout if call.step.kind == "human" else None)
    chain = [{**entry, "after": parse_duration(entry["after"])} for entry in params.get("escalate") or []]
    return {
        "quorum": int(params.get("quorum") or 1),
        "four_eyes": bool(params.get("four_eyes", False)),
        "timeout": parse_duration(timeout) if timeout is not None else None,
        "escalate": chain,
        "on_reject": call.step.on_reject,
    }


def next_deadline(policy: dict[str, Any], level: int, created_at: datetime) -> datetime | None:
    """When the task at ``level`` next escalates or times out; ``after`` counts from the task's creation."""
    chain = policy.get("escalate") or []
    if level < len(chain):
        return created_at + timedelta(seconds=float(chain[level]["after"]))
    if policy.get("timeout") is not None:
        return max(created_at + timedelta(seconds=float(policy["timeout"])), utcnow())
    return None


def open_task(call: StepCall) -> HumanTask:
    """Record the task for this attempt of the step; older open tasks of the same step are superseded."""
    shown = shown_payload(call.params, f"Approve step {call.step_id} of {call.spec.name}")
    policy = task_policy(call)
    now = utcnow()
    task = HumanTask(id=new_id(), run_id=call.run_id, step_id=call.step_id, row_id=call.execution_id,
                     attempt=call.attempt, title=shown["title"], body=shown["body"],
                     assignees=list(call.params.get("assignees") or []), form=call.params.get("form"), shown=shown,
                     payload_hash=payload_digest(shown), policy=policy, level=0,
                     deadline=next_deadline(policy, 0, now), status=TaskStatus.open.value, created_at=now)
    with db.write_session() as session:
        run = session.get(Run, call.run_id, with_for_update=True)
        if run is None or run.status in TERMINAL_RUN:
            raise StepError(f"run {call.run_id} ended before its human step opened a task", retryable=False)
        session.execute(update(HumanTask).where(HumanTask.row_id == call.execution_id,
                                                HumanTask.status == TaskStatus.open.value)
                        .values(status=TaskStatus.cancelled.value, closed_at=now))
        existing = session.scalars(select(HumanTask).where(HumanTask.row_id == call.execution_id,
                                                           HumanTask.attempt == call.attempt)).first()
        if existing is not None:  # a redelivered message for the same attempt
            existing.status, existing.closed_at = TaskStatus.open.value, None
            return existing
        session.add(task)
    return task


def announce(task: HumanTask) -> None:
    """After the park commits: write the Redis wait and notify the assignees."""
    from orchestra import notify, waits

    waits.store_wait(task.id, waits.HUMAN, task.run_id, task.step_id, level=task.level,
                     payload_hash=task.payload_hash, deadline=task.deadline)
    notify.enqueue(task.id, "requested")


class HumanKind(StepKind):
    name = "human"

    def execute(self, call: StepCall) -> Any:
        task = open_task(call)
        raise Park("human.requested", audit={
            "task_id": task.id, "title": task.title, "assignees": task.assignees, "level": task.level,
            "payload_hash": task.payload_hash, "deadline": task.deadline.isoformat() if task.deadline else None,
        }, after_commit=lambda: announce(task))

