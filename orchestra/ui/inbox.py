"""The approver's inbox, each task's page and its decision form.

Decisions go through ``orchestra.decisions.decide``, which checks the assignee,
the form and the payload the approver saw, and lets exactly one decision win.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from orchestra import decisions
from orchestra.auth import Permission, Principal
from orchestra.errors import AlreadyDecided, AuthError, InputError, NotAssignee, PayloadChanged, TaskExpired
from orchestra.models import HumanTask, TaskStatus
from orchestra.notify import verify_link
from orchestra.ui import forms
from orchestra.ui.web import CSRF_FIELD, UIRoute, check_csrf, render, signed_in

router = APIRouter(prefix="/ui", route_class=UIRoute, include_in_schema=False)
P = Permission
NOTICES = {"link": "Opened from your notification."}


def _decider(principal: Principal) -> decisions.Decider:
    principal.require(P.tasks_decide)
    return decisions.Decider(principal.name, principal.groups, principal.is_admin)


def _open_tasks(principal: Principal) -> list[dict[str, Any]]:
    decider = _decider(principal)
    return decisions.list_tasks(decider.actor, decider.groups, is_admin=decider.is_admin)


def _confirmation(principal: Principal, task_id: str | None) -> str | None:
    """The line that confirms a decision the user just made, if ``task_id`` names one of theirs."""
    if not task_id:
        return None
    try:
        task = decisions.get_task(task_id)
    except Exception:  # noqa: BLE001 - a stale or forged query string just shows no confirmation
        return None
    if not _decider(principal).may_decide(task.assignees or []) or task.status == TaskStatus.open.value:
        return None
    if task.decided_by == principal.name:
        return f"You {task.status} “{task.title}”."
    return f"“{task.title}” is {task.status}."


@router.get("/inbox")
def inbox_page(request: Request, decided: str | None = None) -> Response:
    """The open tasks of the signed-in approver with their deadlines and escalation levels."""
    principal = signed_in(request)
    return render(request, "inbox.html", tasks=_open_tasks(principal), notice=_confirmation(principal, decided))


@router.get("/inbox/rows")
def inbox_rows(request: Request) -> Response:
    """The task list of the inbox, polled to keep it live."""
    return render(request, "_inbox_rows.html", tasks=_open_tasks(signed_in(request)))


def _assigned(principal: Principal, task_id: str) -> HumanTask:
    """The task, if the signed-in user may decide it."""
    decider = _decider(principal)
    task = decisions.get_task(task_id)
    if not decider.may_decide(task.assignees or []):
        raise NotAssignee(f"{principal.name} (groups: {', '.join(principal.groups) or 'none'}) is not an assignee of "
                          f"this task; it is assigned to {', '.join(task.assignees or []) or 'nobody'}")
    return task


def _task_page(request: Request, principal: Principal, task: HumanTask, status_code: int = 200, *,
               values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
               problem: str | None = None, notice: str | None = None) -> Response:
    return render(request, "task.html", status_code, task=decisions.task_view(task), fields=forms.fields(task.form),
                  values=values or {}, errors=errors or {}, problem=problem, notice=notice,
                  can_read_run=principal.can(P.runs_read), non_field=forms.NON_FIELD)


@router.get("/tasks/{task_id}")
def task_page(request: Request, task_id: str, link: str | None = None, via: str | None = None) -> Response:
    """A task and its decision form. A signed notification link is checked once, then dropped from the URL."""
    principal = signed_in(request)
    if link is not None:
        try:
            linked = verify_link(link)
        except AuthError as exc:
            return render(request, "error.html", 400, title="This link is not valid", message=exc.message)
        except TaskExpired as exc:
            return render(request, "error.html", 409, title="This link no longer works", message=exc.message,
                          back=(f"/ui/tasks/{task_id}", "Open the task"))
        if linked != task_id:
            return render(request, "error.html", 400, title="This link is not valid",
                          message="the link was signed for another task; use the link as sent")
        return RedirectResponse(f"/ui/tasks/{task_id}?via=link", status_code=303)
    return _task_page(request, principal, _assigned(principal, task_id), notice=NOTICES.get(via or ""))


def _decide(request: Request, task_id: str, submitted: dict[str, str]) -> Response:
    """Check and record the decision; the form again, with errors beside the fields, if it fails."""
    principal = signed_in(request)
    check_csrf(request, submitted.get(CSRF_FIELD))
    task = _assigned(principal, task_id)
    decision = submitted.get("decision", "")
    values = {f.name: submitted[f.param] for f in forms.fields(task.form) if f.param in submitted}
    values["comment"] = submitted.get("comment", "")
    data, wrong = forms.parse(task.form, submitted)
    if decision not in decisions.DECISIONS:
        return _task_page(request, principal, task, 422, values=values, problem="Choose Approve or Reject.")
    if wrong:
        return _task_page(request, principal, task, 422, values=values, errors=wrong,
                          problem="Some fields need fixing before the decision can be recorded.")
    try:
        decisions.decide(task_id, decision, principal.name, principal.groups, is_admin=principal.is_admin,
                         input=data if task.form else None, comment=submitted.get("comment") or None,
                         payload_hash=submitted.get("payload_hash") or None)
    except InputError as exc:
        return _task_page(request, principal, task, 422, values=values, errors=forms.field_errors(exc.errors),
                          problem="Some fields need fixing before the decision can be recorded.")
    except PayloadChanged as exc:
        return _task_page(request, principal, decisions.get_task(task_id), 409, values=values, problem=exc.message)
    except (AlreadyDecided, TaskExpired) as exc:
        return _task_page(request, principal, decisions.get_task(task_id), 409, problem=exc.message)
    return RedirectResponse(f"/ui/inbox?decided={task_id}", status_code=303)


@router.post("/tasks/{task_id}/decision")
async def decide(request: Request, task_id: str) -> Response:
    """Approve or reject the task with the form's input; back to the inbox with a confirmation."""
    form = await request.form()
    submitted = {key: value for key, value in form.items() if isinstance(value, str)}
    return await run_in_threadpool(_decide, request, task_id, submitted)
