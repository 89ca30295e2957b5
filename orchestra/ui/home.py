"""The overview at ``/ui/home``: what needs attention now.

Counts of runs waiting, running and failed in the last 24 hours (each a link to
those runs), the oldest open task, and a search by run id or business key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import func, select

from orchestra import db, decisions
from orchestra.auth import Permission, Principal
from orchestra.models import TERMINAL_RUN, HumanTask, Run, RunStatus, TaskStatus, utcnow
from orchestra.ui.web import UIRoute, render, signed_in

router = APIRouter(prefix="/ui", route_class=UIRoute, include_in_schema=False)
P = Permission
RECENT = timedelta(hours=24)


@dataclass(frozen=True)
class Count:
    """One number on the overview and where it leads."""

    label: str
    status: str
    value: int
    link: str


@dataclass(frozen=True)
class OldestTask:
    """The open task that has waited longest, and a link this user may follow."""

    title: str
    created_at: datetime
    run_id: str
    link: str


def _own(principal: Principal) -> str | None:
    return None if principal.can(P.runs_read) else principal.name


def run_counts(principal: Principal, now: datetime) -> list[Count]:
    """Waiting, running, and failed since ``now - 24h``; a submitter counts only its own runs."""
    mine = _own(principal)
    query = select(Run.status, func.count()).where(Run.status.in_([RunStatus.waiting.value, RunStatus.running.value]))
    failed = select(func.count()).select_from(Run).where(Run.status == RunStatus.failed.value,
                                                         Run.updated_at >= now - RECENT)
    if mine:
        query, failed = query.where(Run.submitted_by == mine), failed.where(Run.submitted_by == mine)
    with db.read_session() as session:
        by_status = {status: n for status, n in session.execute(query.group_by(Run.status)).all()}
        failed_recently = int(session.scalar(failed) or 0)
    return [Count("Waiting", "waiting", int(by_status.get("waiting", 0)), "/ui/runs?status=waiting"),
            Count("Failed in the last 24 h", "failed", failed_recently, "/ui/runs?status=failed"),
            Count("Running", "running", int(by_status.get("running", 0)), "/ui/runs?status=running")]


def oldest_task(principal: Principal) -> OldestTask | None:
    """The oldest open task this user may decide, or, for a reader of runs, the oldest one anywhere."""
    if principal.can(P.tasks_decide):
        mine = decisions.list_tasks(principal.name, principal.groups, is_admin=principal.is_admin, limit=1000)
        if not mine:
            return None
        task: dict[str, Any] = mine[-1]
        return OldestTask(task["title"], datetime.fromisoformat(task["created_at"]), task["run_id"],
                          f"/ui/tasks/{task['id']}")
    query = (select(HumanTask).join(Run, Run.id == HumanTask.run_id)
             .where(HumanTask.status == TaskStatus.open.value, Run.status.not_in([s.value for s in TERMINAL_RUN]))
             .order_by(HumanTask.created_at).limit(1))
    if _own(principal):
        query = query.where(Run.submitted_by == principal.name)
    with db.read_session() as session:
        row = session.scalars(query).first()
    if row is None:
        return None
    return OldestTask(row.title, row.created_at, row.run_id, f"/ui/runs/{row.run_id}")


@router.get("/home")
def home_page(request: Request) -> Response:
    """Counts by status, the oldest open task and a search box."""
    principal = signed_in(request)
    principal.require(P.runs_read, P.runs_read_own)
    now = utcnow()
    return render(request, "home.html", counts=run_counts(principal, now), oldest=oldest_task(principal), now=now)
