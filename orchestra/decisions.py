"""Deciding human tasks: the library functions the CLI and the API call.

``decide`` checks, in order: the task exists and is open, the caller is an
assignee (or an admin), four-eyes, the input against the task's ``form``, and
that the payload the decision binds to is still what the task shows. Then it
claims the decision atomically in Redis (``waits.claim_decision``) and backs the
claim with a unique ``decisions.final_for`` row in the same transaction that
resumes the run. Exactly one decision wins; every other gets ``AlreadyDecided``
naming who decided and when.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from orchestra import db, templates, transitions, waits
from orchestra.errors import AlreadyDecided, InputError, NotAssignee, NotFound, PayloadChanged, TaskExpired, TemplateError
from orchestra.ids import new_id, resolve_id
from orchestra.models import NO_ITEM, TERMINAL_RUN, Decision, HumanTask, Run, StepRun, StepStatus, TaskStatus, utcnow
from orchestra.steps.human import payload_digest, shown_payload
from orchestra.workflows import get_workflow
from orchestra.outages import translated

DECISIONS = ("approve", "reject")


@dataclass(frozen=True)
class Decider:
    """Who is acting: a user name, their groups, and whether they are an admin."""

    actor: str
    groups: tuple[str, ...] = ()
    is_admin: bool = False

    def may_decide(self, assignees: Sequence[str]) -> bool:
        """Whether this principal is one of ``assignees`` (users, ``user:`` or ``group:`` names)."""
        if self.is_admin:
            return True
        for name in assignees:
            if name.startswith("group:"):
                if name.removeprefix("group:") in self.groups:
                    return True
            elif name.removeprefix("user:") == self.actor:
                return True
        return False


def task_view(task: HumanTask) -> dict[str, Any]:
    """A human task as the API and the inbox show it."""
    return {
        "id": task.id, "run_id": task.run_id, "step_id": task.step_id, "title": task.title, "body": task.body,
        "show": (task.shown or {}).get("show"), "assignees": task.assignees, "form": task.form,
        "deadline": task.deadline.isoformat() if task.deadline else None, "level": task.level, "status": task.status,
        "payload_hash": task.payload_hash, "quorum": (task.policy or {}).get("quorum", 1),
        "decided_by": task.decided_by, "output": task.output, "created_at": task.created_at.isoformat(),
    }


@translated
def list_tasks(actor: str, groups: Sequence[str] = (), *, is_admin: bool = False, status: str | None = "open",
               limit: int = 200) -> list[dict[str, Any]]:
    """The tasks ``actor`` may act on (every task for an admin), newest first. ``status=None`` lists all."""
    principal = Decider(actor, tuple(groups), is_admin)
    query = select(HumanTask).join(Run, Run.id == HumanTask.run_id).order_by(HumanTask.created_at.desc())
    if status:
        query = query.where(HumanTask.status == status)
    if status == TaskStatus.open.value:
        query = query.where(Run.status.not_in([s.value for s in TERMINAL_RUN]))
    with db.read_session() as session:
        tasks = list(session.scalars(query.limit(limit * 5)))
    return [task_view(t) for t in tasks if principal.may_decide(t.assignees or [])][:limit]


@translated
def get_task(task_id: str) -> HumanTask:
    """The task row, or ``NotFound`` naming how to find task ids."""
    with db.read_session() as session:
        task = session.get(HumanTask, resolve_id(session, HumanTask.id, task_id, noun="task", listing="orchestra inbox"))
    if task is None:
        raise NotFound(f"no human task {task_id}; list open tasks with `orchestra inbox`")
    return task


def refuse_closed(task: HumanTask) -> None:
    """Raise the error that explains why ``task`` can no longer be decided."""
    if task.status in (TaskStatus.approved.value, TaskStatus.rejected.value):
        at = task.closed_at.isoformat() if task.closed_at else "an earlier time"
        raise AlreadyDecided(f"task {task.id} was already decided by {task.decided_by} at {at} "
                             f"({task.status}); it cannot be decided again")
    if task.status == TaskStatus.expired.value:
        raise TaskExpired(f"task {task.id} expired: {((task.output or {}).get('reason')) or 'its deadline passed'}; "
                          "it can no longer be decided")
    if task.status == TaskStatus.cancelled.value:
        raise TaskExpired(f"task {task.id} was closed (its run was cancelled or its step restarted); "
                          "it can no longer be decided")


def check_form(task: HumanTask, data: Any) -> None:
    """Raise ``InputError`` listing every way ``data`` breaks the task's ``form``."""
    if not task.form:
        return
    validator = jsonschema.validators.validator_for(task.form)(task.form)
    errors = sorted(validator.iter_errors({} if data is None else data), key=lambda e: list(e.absolute_path))
    if errors:
        raise InputError(f"the input does not match the form of task {task.id}", [
            {"loc": ["input", *e.absolute_path], "type": e.validator,
             "msg": f"{e.message}; fix the input to match the task's form"} for e in errors])


def _check_principal(task: HumanTask, principal: Decider, decision: str) -> None:
    if not principal.may_decide(task.assignees or []):
        raise NotAssignee(f"{principal.actor} is not an assignee of task {task.id}; it is assigned to "
                          f"{', '.join(task.assignees or []) or 'nobody'}")
    if decision == "approve" and (task.policy or {}).get("four_eyes"):
        with db.read_session() as session:
            run = session.get(Run, task.run_id)
        if run is not None and run.submitted_by == principal.actor:
            raise NotAssignee(f"task {task.id} needs four eyes: {principal.actor} submitted run {task.run_id} and may "
                              "not approve it; another assignee must approve")


def current_payload(task: HumanTask) -> dict[str, Any] | None:
    """What the task would show now, re-rendered from the run's recorded state (None if it cannot say)."""
    with db.read_session() as session:
        run = session.get(Run, task.run_id)
        row = session.get(StepRun, task.row_id)
        if run is None or row is None or row.item != NO_ITEM:
            return None
        rows = list(session.scalars(select(StepRun).where(StepRun.run_id == run.id, StepRun.item == NO_ITEM)))
    spec = get_workflow(run.workflow, run.version)
    step = spec.by_id[task.step_id]
    if step.kind != "human":  # a model or agent step that escalated: its task shows what the connector saw then
        return None
    try:
        params = templates.render({k: step.with_.get(k) for k in ("title", "body", "show")}, templates.step_context(run, rows))
    except TemplateError:
        return None
    return shown_payload(params, f"Approve step {task.step_id} of {spec.name}")


def _check_payload(task: HumanTask, payload_hash: str | None) -> None:
    """Refuse a decision bound to a payload the task no longer shows; refresh the task when it changed."""
    now_shown = current_payload(task)
    if now_shown is not None and payload_digest(now_shown) != task.payload_hash:
        refresh_payload(task.id, now_shown)
        raise PayloadChanged(f"what task {task.id} shows has changed since it was shown (an upstream step produced "
                             "different output); review the task again, then decide")
    if payload_hash and payload_hash != task.payload_hash:
        raise PayloadChanged(f"the decision binds to payload {payload_hash[:12]}…, but task {task.id} now shows "
                             f"{task.payload_hash[:12]}…; reload the task, review it, then decide")


def refresh_payload(task_id: str, shown: dict[str, Any]) -> None:
    """Show the task's new payload, audited; decisions bound to the old one are refused."""
    digest = payload_digest(shown)
    with db.write_session() as session:
        task = session.get(HumanTask, task_id)
        assert task is not None
        tx = transitions.within(session)
        transitions.note(tx, transitions.locked(tx, task.run_id), "human.payload_changed", step_id=task.step_id,
                         payload={"task_id": task.id, "old_hash": task.payload_hash, "payload_hash": digest})
        task.shown, task.title, task.body, task.payload_hash = shown, shown["title"], shown["body"], digest
    waits.store_wait(task.id, waits.HUMAN, task.run_id, task.step_id, level=task.level, payload_hash=digest,
                     deadline=task.deadline)


@translated
def decide(task_id: str, decision: str, actor: str, groups: Sequence[str] = (), *, is_admin: bool = False,
           input: Any = None, comment: str | None = None, payload_hash: str | None = None) -> dict[str, Any]:
    """Approve or reject a human task as ``actor``; returns the task's view after the decision.

    Raises:
        NotFound: unknown task. AlreadyDecided / TaskExpired: it is closed (409).
        NotAssignee: not an assignee, or four-eyes (403). InputError: input fails the form
            (422); a reject without input is not checked against the form.
        PayloadChanged: the payload it binds to changed (409).
    """
    if decision not in DECISIONS:
        raise InputError(f"'{decision}' is not a decision", [
            {"loc": ["decision"], "type": "enum", "msg": f"'{decision}' is not allowed; use approve or reject"}])
    task = get_task(task_id)
    refuse_closed(task)
    principal = Decider(actor, tuple(groups), is_admin)
    _check_principal(task, principal, decision)
    if decision == "approve" or input is not None:  # a bare reject owes the form nothing
        check_form(task, input)
    _check_payload(task, payload_hash)
    quorum = int((task.policy or {}).get("quorum") or 1)
    claim = _claim(task, actor, decision, quorum)
    if claim.outcome == "vote":
        record_vote(task, actor, decision, input, comment, quorum)
    else:
        settle(task, actor, decision, input=input, comment=comment)
    return task_view(get_task(task_id))


def _claim(task: HumanTask, actor: str, decision: str, quorum: int) -> waits.Claim:
    claim = waits.claim_decision(task.id, actor, decision, quorum, utcnow())
    if claim.outcome == "missing" and waits.restore_wait(task.id):  # Redis lost it; the database still has it
        claim = waits.claim_decision(task.id, actor, decision, quorum, utcnow())
    if claim.outcome == "decided":
        raise AlreadyDecided(f"task {task.id} was already decided by {claim.by} at {claim.at}; "
                             "it cannot be decided again")
    if claim.outcome == "voted":
        raise AlreadyDecided(f"{actor} already approved task {task.id}; it needs approvals from "
                             f"{quorum} different people")
    if claim.outcome == "missing":
        refuse_closed(get_task(task.id))
        raise TaskExpired(f"task {task.id} is no longer waiting (its step or run has ended); it cannot be decided")
    return claim


@dataclass
class Locked:
    """A task's run (locked), the task and its step row, re-read inside one write transaction."""

    tx: transitions.Tx
    run: transitions.RunRow
    task: HumanTask
    row: StepRun


def locked(session: Any, task: HumanTask) -> Locked:
    """Lock the run, then re-read the task and its step inside the transaction; refuse if either moved on."""
    tx = transitions.within(session)
    run = transitions.locked(tx, task.run_id)
    fresh = session.get(HumanTask, task.id, populate_existing=True)
    row = session.get(StepRun, task.row_id, populate_existing=True)
    assert fresh is not None and row is not None
    refuse_closed(fresh)
    if run.status in TERMINAL_RUN:
        raise TaskExpired(f"run {run.id} already ended as {run.status}; task {task.id} can no longer be decided"
                          + (" (retry the run first)" if run.status == "failed" else ""))
    if row.status != StepStatus.waiting.value:
        raise TaskExpired(f"step {row.step_id} of run {run.id} is {row.status}, not waiting; try again in a moment "
                          "if it is still being parked")
    return Locked(tx, run, fresh, row)


def record_vote(task: HumanTask, actor: str, decision: str, input: Any, comment: str | None, quorum: int) -> None:
    """One approval towards a quorum, backed by a unique (task, actor) row."""
    try:
        with db.write_session() as session:
            held = locked(session, task)
            fresh = held.task
            session.add(Decision(id=new_id(), task_id=task.id, actor=actor, decision=decision, input=input,
                                 comment=comment, level=fresh.level, payload_hash=fresh.payload_hash, decided_at=utcnow()))
            session.flush()
            votes = session.scalar(select(func.count()).select_from(Decision).where(Decision.task_id == task.id))
            transitions.note(held.tx, held.run, "human.voted", actor=actor, step_id=task.step_id,
                             payload={"task_id": task.id, "decision": decision, "comment": comment, "input": input,
                                      "votes": votes, "quorum": quorum, "payload_hash": fresh.payload_hash})
    except IntegrityError:
        raise AlreadyDecided(f"{actor} already voted on task {task.id}; each person votes once") from None
    except Exception:
        waits.release_claim(task.id, actor)
        raise


def settle(task: HumanTask, actor: str, decision: str, *, input: Any = None, comment: str | None = None,
           reason: str | None = None) -> None:
    """Record the winning decision and resume (or, with ``on_reject: fail``, fail) the run. The claim is held."""
    at = utcnow()
    try:
        with db.write_session() as session:
            closed = _record_decision(session, locked(session, task), actor, decision, input, comment, at, reason)
    except IntegrityError:
        waits.release_claim(task.id, actor)
        refuse_closed(get_task(task.id))
        raise AlreadyDecided(f"task {task.id} was already decided; it cannot be decided again") from None
    except Exception:
        waits.release_claim(task.id, actor)
        raise
    waits.after_resume(task.run_id, task.id, dispatch=closed is None, closed=closed or [])


def _record_decision(session: Any, held: Locked, actor: str, decision: str, input: Any,
                     comment: str | None, at: datetime, reason: str | None) -> list[str] | None:
    """Write the decision and its effect; returns None if the run goes on, else the waits its failure closed."""
    task, row = held.task, held.row
    session.add(Decision(id=new_id(), task_id=task.id, actor=actor, decision=decision, input=input, comment=comment,
                         level=task.level, payload_hash=task.payload_hash, decided_at=at, final_for=task.id))
    session.flush()
    approvers = list(session.scalars(select(Decision.actor).where(Decision.task_id == task.id,
                                                                  Decision.decision == "approve")))
    output: dict[str, Any] = {"decision": decision, "input": input, "comment": comment, "decided_by": actor,
                              "decided_at": at.isoformat()}
    if int((task.policy or {}).get("quorum") or 1) > 1:
        output["approvers"] = approvers
    task.status = TaskStatus.approved.value if decision == "approve" else TaskStatus.rejected.value
    task.decided_by, task.closed_at, task.output = actor, at, output
    tx = transitions.within(session)  # flushed: the task is decided before the run's open waits close
    transitions.note(tx, held.run, "human.decided", actor=actor, step_id=task.step_id,
                     payload={"task_id": task.id, "decision": decision, "comment": comment, "input": input,
                              "level": task.level, "payload_hash": task.payload_hash,
                              **({"reason": reason} if reason else {})})
    if decision == "reject" and (task.policy or {}).get("on_reject") == "fail":
        return transitions.fail_waiting(tx, held.run, row.id, f"rejected by {actor}" + (f": {comment}" if comment else ""))
    transitions.resume(tx, held.run, row.id, output)
    return None
