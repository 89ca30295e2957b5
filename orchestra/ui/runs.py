"""Run pages: the filtered, paged list and each run's steps, audit trail and actions."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from orchestra import audit, db
from orchestra.auth import Permission, Principal
from orchestra.errors import InputError
from orchestra.ids import is_uuid
from orchestra.models import TERMINAL_RUN, RunStatus
from orchestra.runs import cancel_run, get_run, list_runs, retry_run, run_view
from orchestra.ui.present import duration, timeline
from orchestra.ui.web import CSRF_FIELD, UIRoute, check_csrf, render, signed_in
from orchestra.workflows import list_workflows

router = APIRouter(prefix="/ui/runs", route_class=UIRoute, include_in_schema=False)
P = Permission
PAGE_SIZE = 25
STATUSES = [s.value for s in RunStatus]
NOTICES = {"cancelled": "The run was cancelled.", "retried": "The run was sent to retry its failed steps."}
ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{4,36}$")  # what a run id, or the start of one, may look like


def _filters(workflow: str | None, status: str | None, cursor: str | None, q: str | None = None) -> dict[str, str]:
    if status and status not in STATUSES:
        raise InputError("unknown status", [{"loc": ["query", "status"], "type": "enum",
                                             "msg": f"'{status}' is not a run status; use one of {', '.join(STATUSES)}"}])
    if cursor and not is_uuid(cursor):
        raise InputError("bad cursor", [{"loc": ["query", "cursor"], "type": "uuid",
                                         "msg": "the cursor is the last run id of the previous page; start again"}])
    if q and len(q) > 200:
        raise InputError("search too long", [{"loc": ["query", "q"], "type": "length",
                                              "msg": "search by a run id (or its first characters) or a business key "
                                                     "of at most 200 characters"}])
    pairs = (("workflow", workflow), ("status", status), ("cursor", cursor), ("q", q.strip() if q else None))
    return {k: v for k, v in pairs if v}


def search(principal: Principal, q: str, workflow: str | None, status: str | None) -> list[Any]:
    """Runs whose business key is ``q`` and runs whose id starts with ``q``, newest first, one page of them."""
    mine = None if principal.can(P.runs_read) else principal.name
    found = {r.id: r for r in list_runs(key=q, workflow=workflow, status=status, limit=PAGE_SIZE,
                                        submitted_by=mine)[0]}
    if ID_PREFIX.match(q):
        found.update((r.id, r) for r in list_runs(id_prefix=q, workflow=workflow, status=status, limit=PAGE_SIZE,
                                                  submitted_by=mine)[0])
    return sorted(found.values(), key=lambda r: r.id, reverse=True)[:PAGE_SIZE]


def _page(principal: Principal, query: dict[str, str]) -> dict[str, Any]:
    """The runs of one page, and the query strings for the next page and for live updates."""
    principal.require(P.runs_read, P.runs_read_own)
    mine = None if principal.can(P.runs_read) else principal.name
    if "q" in query:
        runs = search(principal, query["q"], query.get("workflow"), query.get("status"))
        return {"runs": runs, "query": query, "live_query": urlencode(query), "next_query": None,
                "first_query": None}
    runs, next_cursor = list_runs(workflow=query.get("workflow"), status=query.get("status"), limit=PAGE_SIZE,
                                  cursor=query.get("cursor"), submitted_by=mine)
    after = {k: v for k, v in query.items() if k != "cursor"}
    return {"runs": runs, "query": query, "live_query": urlencode(query),
            "next_query": urlencode({**after, "cursor": next_cursor}) if next_cursor else None,
            "first_query": urlencode(after) if "cursor" in query else None}


@router.get("")
def runs_page(request: Request, workflow: str | None = None, status: str | None = None,
              cursor: str | None = None, q: str | None = None) -> Response:
    """Runs, newest first, filtered by workflow and status, a page at a time, or found by id or business key."""
    principal = signed_in(request)
    page = _page(principal, _filters(workflow or None, status or None, cursor or None, q or None))
    return render(request, "runs.html", workflows=[w["name"] for w in list_workflows()], statuses=STATUSES, **page)


@router.get("/rows")
def runs_rows(request: Request, workflow: str | None = None, status: str | None = None,
              cursor: str | None = None, q: str | None = None) -> Response:
    """The table body of the runs page, polled to keep it live."""
    principal = signed_in(request)
    page = _page(principal, _filters(workflow or None, status or None, cursor or None, q or None))
    return render(request, "_run_rows.html", **page)


def _run_context(principal: Principal, run_id: str) -> dict[str, Any]:
    """A run's view, its audit trail (for roles that may read it) and the actions this role may take."""
    principal.require(P.runs_read, P.runs_read_own)
    run = get_run(run_id)
    principal.require_run(run, P.runs_read, P.runs_read_own)
    view = run_view(run_id)
    trail, verification = None, None
    if principal.can(P.audit_read):
        with db.read_session() as session:
            trail = audit.list_events(session, run_id)
        verification = audit.verify_chain(trail, head=run.audit_hash or None)
    manage = principal.can(P.runs_manage)
    final = RunStatus(view["status"]) in TERMINAL_RUN
    return {"run": view, "lanes": timeline(view["steps"]), "took": duration(view["created_at"],
                                                                             view["updated_at"] if final else None),
            "events": [audit.event_dict(e) for e in trail or []], "verification": verification,
            "can_cancel": manage and not final, "can_retry": manage and view["status"] == RunStatus.failed.value,
            "final": final}


@router.get("/{run_id}")
def run_page(request: Request, run_id: str, done: str | None = None) -> Response:
    """One run: its status, step timeline, outputs, audit trail and actions."""
    context = _run_context(signed_in(request), run_id)
    return render(request, "run.html", notice=NOTICES.get(done or ""), **context)


@router.get("/{run_id}/live")
def run_live(request: Request, run_id: str) -> Response:
    """The changing part of the run page, polled until the run ends."""
    return render(request, "_run_live.html", **_run_context(signed_in(request), run_id))


@router.post("/{run_id}/cancel")
def cancel(request: Request, run_id: str, csrf_token: Annotated[str, Form(alias=CSRF_FIELD)] = "") -> Response:
    """Cancel the run as the signed-in user (roles that may manage runs only)."""
    principal = signed_in(request)
    check_csrf(request, csrf_token)
    principal.require(P.runs_manage)
    cancel_run(run_id, actor=principal.name)
    return RedirectResponse(f"/ui/runs/{run_id}?done=cancelled", status_code=303)


@router.post("/{run_id}/retry")
def retry(request: Request, run_id: str, csrf_token: Annotated[str, Form(alias=CSRF_FIELD)] = "") -> Response:
    """Retry the failed run's failed steps as the signed-in user (roles that may manage runs only)."""
    principal = signed_in(request)
    check_csrf(request, csrf_token)
    principal.require(P.runs_manage)
    retry_run(run_id, actor=principal.name)
    return RedirectResponse(f"/ui/runs/{run_id}?done=retried", status_code=303)
