"""Hand a model step to a person instead of spending past a budget or failing on bad answers.

The step parks on a human task (the same wait as ``uses: human``). The task
shows why, and its form is the step's ``output_schema``, so the approver can
supply the answer the model was asked for; the decision resumes the step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from orchestra.steps.base import Park, StepCall

DEFAULT_APPROVERS = ["group:admins"]


def escalate(call: StepCall, *, reason: str, detail: str, form: dict[str, Any] | None,
             approvers: list[str] | None = None, show: dict[str, Any] | None = None) -> Park:
    """Open a human task for ``call`` and return the ``Park`` the kind raises."""
    from orchestra.steps.human import announce, open_task

    show = {"reason": reason, "detail": detail, "connector": call.step.target,
            "prompt": call.params.get("prompt"), **(show or {})}
    params = {"title": f"{call.spec.name}: step {call.step_id} needs a person ({reason.replace('_', ' ')})",
              "body": detail, "show": {k: v for k, v in show.items() if v is not None},
              "assignees": approvers or call.params.get("approvers") or DEFAULT_APPROVERS,
              **({"form": form} if form else {})}
    task = open_task(dataclasses.replace(call, params=params))
    return Park("human.requested", audit={
        "task_id": task.id, "title": task.title, "assignees": task.assignees, "reason": reason,
        "payload_hash": task.payload_hash, "deadline": task.deadline.isoformat() if task.deadline else None,
    }, after_commit=lambda: announce(task))
