"""Helpers shared by the wait, decision, signal and notification tests."""

from __future__ import annotations

import uuid
from typing import Any

from orchestra import db
from orchestra.audit import list_events, verify_chain
from orchestra.decisions import list_tasks
from orchestra.models import Run
from tests.support.harness import wait_until


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def audit_of(run_id: str) -> tuple[list[Any], bool]:
    """The run's events and whether the chain verifies."""
    with db.read_session() as session:
        events = list_events(session, run_id)
        run = session.get(Run, run_id)
        head = run.audit_hash if run else None
    return events, verify_chain(events, head=head).verified


def event_types(run_id: str) -> list[str]:
    return [e.type + (f":{e.step_id}" if e.step_id else "") for e in audit_of(run_id)[0]]


def open_task_of(run_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the run has an open human task (its Redis wait written too); return its view."""
    from orchestra import keys

    def found() -> dict[str, Any] | None:
        tasks = [t for t in list_tasks("admin", is_admin=True) if t["run_id"] == run_id]
        if tasks and keys.client().exists(keys.WAIT + tasks[0]["id"]):
            return tasks[0]
        return None

    return wait_until(found, timeout=timeout, what=f"an open task on run {run_id}")


APPROVAL = """
name: {name}
input_schema: {{type: object}}
steps:
  - {{id: before, uses: "task:tests.support.steps.add", with: {{a: 1, b: 2}}}}
  - id: approve
    uses: human
    on_reject: {on_reject}
    with:
      title: "Approve {{{{ input.what }}}}?"
      body: "before gave {{{{ steps.before.output }}}}"
      assignees: {assignees}
      show: {{total: "{{{{ steps.before.output }}}}"}}
      form: {{type: object, properties: {{note: {{type: string}}, amount: {{type: number}}}}}}
{extra}
  - id: after
    uses: "task:tests.support.steps.add"
    if: "steps.approve.output.decision == 'approve'"
    with: {{a: "{{{{ steps.before.output }}}}", b: 10}}
"""


def approval_spec(name: str, *, assignees: str = "[group:leads, alice]", on_reject: str = "continue",
                  extra: str = "") -> str:
    return APPROVAL.format(name=name, assignees=assignees, on_reject=on_reject, extra=extra)
