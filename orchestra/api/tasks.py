"""``/v1/tasks``: the human tasks a caller may act on, and decisions on them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from orchestra import decisions
from orchestra.api.deps import Caller
from orchestra.api.responses import errors
from orchestra.api.schemas import DecisionIn, TaskList, TaskOut
from orchestra.auth import Permission, Principal
from orchestra.errors import NotAssignee

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
TaskStatusName = Literal["open", "approved", "rejected", "expired", "cancelled", "all"]


@router.get("", response_model=TaskList, responses=errors(401, 403, 422, 503))
def get_tasks(caller: Caller, status: TaskStatusName = "open",
              limit: Annotated[int, Query(ge=1, le=500)] = 200) -> TaskList:
    """The tasks assigned to the caller or its groups (every task for an admin), newest first."""
    caller.require(Permission.tasks_decide)
    found = decisions.list_tasks(caller.name, caller.groups, is_admin=caller.is_admin,
                                 status=None if status == "all" else status, limit=limit)
    return TaskList.model_validate({"tasks": found})


@router.get("/{task_id}", response_model=TaskOut, responses=errors(401, 403, 404, 422, 503))
def get_one_task(task_id: str, caller: Caller) -> TaskOut:
    """One task, if the caller is among its assignees."""
    caller.require(Permission.tasks_decide)
    task = decisions.get_task(task_id)
    _require_assignee(caller, task.assignees or [], task_id)
    return TaskOut.model_validate(decisions.task_view(task))


def _require_assignee(caller: Principal, assignees: list[str], task_id: str) -> None:
    if not decisions.Decider(caller.name, caller.groups, caller.is_admin).may_decide(assignees):
        raise NotAssignee(f"key '{caller.name}' (groups: {', '.join(caller.groups) or 'none'}) is not an assignee "
                          f"of task {task_id}; it is assigned to {', '.join(assignees) or 'nobody'}")


@router.post("/{task_id}/decision", response_model=TaskOut, responses=errors(401, 403, 404, 409, 413, 422, 503))
def post_decision(task_id: str, body: DecisionIn, caller: Caller) -> TaskOut:
    """Approve or reject. 409 if already decided or expired, 403 if not an assignee, 422 if the input fails the form."""
    caller.require(Permission.tasks_decide)
    view = decisions.decide(task_id, body.decision, caller.name, caller.groups, is_admin=caller.is_admin,
                            input=body.input, comment=body.comment, payload_hash=body.payload_hash)
    return TaskOut.model_validate(view)
