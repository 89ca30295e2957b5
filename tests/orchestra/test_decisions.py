"""Deciding human tasks on real workers: resume, branching, policies and every refusal."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestra.decisions import decide, list_tasks
from orchestra.errors import AlreadyDecided, InputError, NotAssignee, NotFound
from orchestra.runs import submit_run
from tests.orchestra.waitkit import approval_spec, audit_of, event_types, open_task_of, unique
from tests.support.harness import wait_for_run, wait_until


def test_an_approval_parks_the_run_and_a_decision_resumes_it_to_completion(workers, register):
    name = unique("approval")
    register(approval_spec(name))
    run, _ = submit_run(name, {"what": "the refund"}, actor="bob")
    assert wait_for_run(run.id)["status"] == "waiting"
    task = open_task_of(run.id)
    assert task["title"] == "Approve the refund?"
    assert task["show"] == {"total": 3}
    assert [t["id"] for t in list_tasks("carol", ["leads"]) if t["run_id"] == run.id] == [task["id"]]
    assert [t for t in list_tasks("mallory", ["interns"]) if t["run_id"] == run.id] == []

    decided = decide(task["id"], "approve", "alice", input={"note": "fine"}, comment="ok by me")

    assert decided["status"] == "approved"
    view = wait_for_run(run.id, ("succeeded", "failed"))
    assert view["status"] == "succeeded"
    steps = {s["id"]: s for s in view["steps"]}
    assert steps["approve"]["output"]["decision"] == "approve"
    assert steps["approve"]["output"]["decided_by"] == "alice"
    assert steps["approve"]["output"]["input"] == {"note": "fine"}
    assert steps["after"]["output"] == 13
    events, verified = audit_of(run.id)
    assert verified
    requested = next(e for e in events if e.type == "human.requested")
    decided_event = next(e for e in events if e.type == "human.decided")
    assert requested.payload["payload_hash"] == task["payload_hash"]
    assert decided_event.actor == "alice"
    assert decided_event.payload["comment"] == "ok by me"


def test_a_rejection_skips_the_approved_branch_and_the_run_succeeds(workers, register):
    name = unique("reject")
    register(approval_spec(name))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    decide(task["id"], "reject", "carol", ["leads"], comment="no")
    view = wait_for_run(run.id, ("succeeded", "failed"))
    assert view["status"] == "succeeded"
    assert {s["id"]: s["status"] for s in view["steps"]}["after"] == "skipped"


def test_on_reject_fail_fails_the_run_with_the_reason(workers, register):
    name = unique("rejectfail")
    register(approval_spec(name, on_reject="fail"))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    decide(task["id"], "reject", "alice", comment="too expensive")
    view = wait_for_run(run.id, ("succeeded", "failed"))
    assert view["status"] == "failed"
    assert "rejected by alice: too expensive" in view["error"]
    assert audit_of(run.id)[1]


def test_fifty_concurrent_decisions_have_exactly_one_winner(workers, register):
    name = unique("race")
    register(approval_spec(name, assignees="[group:leads]"))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)

    def attempt(i: int) -> str:
        try:
            decide(task["id"], "approve" if i % 2 else "reject", f"user{i}", ["leads"], comment=str(i))
            return "won"
        except AlreadyDecided as exc:
            return exc.message

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(attempt, range(50)))
    assert outcomes.count("won") == 1
    losers = [o for o in outcomes if o != "won"]
    assert all("already decided by user" in o for o in losers)
    view = wait_for_run(run.id, ("succeeded", "failed"))
    assert view["status"] == "succeeded"
    assert event_types(run.id).count("human.decided:approve") == 1


def test_every_bad_decision_gets_a_clear_error_and_the_wait_survives(workers, register):
    name = unique("bad")
    register(approval_spec(name))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    with pytest.raises(NotFound, match="orchestra inbox"):
        decide("0190c4a6-0000-7000-8000-000000000000", "approve", "alice")
    with pytest.raises(NotFound, match="not a task id"):
        decide("nope", "approve", "alice")
    with pytest.raises(NotAssignee, match="mallory is not an assignee.*group:leads, alice"):
        decide(task["id"], "approve", "mallory", ["interns"])
    with pytest.raises(InputError) as bad_form:
        decide(task["id"], "approve", "alice", input={"amount": "lots"})
    assert bad_form.value.errors[0]["loc"] == ["input", "amount"]
    assert "is not of type 'number'" in bad_form.value.errors[0]["msg"]
    with pytest.raises(InputError, match="not a decision"):
        decide(task["id"], "maybe", "alice")
    assert open_task_of(run.id)["status"] == "open"
    decide(task["id"], "approve", "alice")
    with pytest.raises(AlreadyDecided, match="already decided by alice at"):
        decide(task["id"], "reject", "carol", ["leads"])
    assert wait_for_run(run.id, ("succeeded", "failed"))["status"] == "succeeded"


def test_a_required_form_binds_approvals_but_a_bare_reject_needs_no_input(workers, register):
    name = unique("required")
    spec = approval_spec(name).replace(
        "form: {type: object, properties: {note: {type: string}, amount: {type: number}}}",
        "form: {type: object, required: [note], properties: {note: {type: string}}}")
    assert "required: [note]" in spec
    register(spec)
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    with pytest.raises(InputError) as refused:
        decide(task["id"], "approve", "alice")
    assert "note" in refused.value.errors[0]["msg"]
    decided = decide(task["id"], "reject", "alice", comment="not this one")
    assert decided["status"] == "rejected"


def test_a_human_step_inside_for_each_opens_one_task_per_item_and_joins_after_all_decisions(workers, register):
    name = unique("fe-human")
    register(f"""
name: {name}
steps:
  - id: approve_each
    uses: human
    for_each: "input.items"
    with:
      title: "Approve {{{{ item }}}}?"
      assignees: [alice]
  - id: after
    uses: "task:tests.support.steps.count"
    with: {{key: "{name}", value: "{{{{ steps.approve_each.output | map(attribute='decision') | list }}}}"}}
""")
    run, _ = submit_run(name, {"items": ["a", "b"]})
    tasks = wait_until(lambda: (t := [t for t in list_tasks("alice") if t["run_id"] == run.id]) and len(t) == 2 and t,
                       timeout=30, what="two open tasks")
    assert sorted(t["title"] for t in tasks) == ["Approve a?", "Approve b?"]
    by_title = {t["title"]: t for t in tasks}
    decide(by_title["Approve a?"]["id"], "approve", "alice")
    assert wait_for_run(run.id, ("waiting", "running"))["status"] in ("waiting", "running")
    decide(by_title["Approve b?"]["id"], "reject", "alice")
    view = wait_for_run(run.id, ("succeeded", "failed"))
    assert view["status"] == "succeeded", view
    after = next(s for s in view["steps"] if s["id"] == "after")
    assert after["output"] == ["approve", "reject"]


def test_a_decision_while_the_broker_is_down_is_kept_and_the_run_resumes_later(workers, register, monkeypatch):
    from celery import Celery

    import orchestra.broker as broker

    name = unique("outage")
    register(approval_spec(name))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    dead = Celery("dead", broker="redis://127.0.0.1:1/0", set_as_current=False)
    dead.conf.broker_connection_timeout = 0.5
    monkeypatch.setattr(broker, "_app", dead)
    decided = decide(task["id"], "approve", "alice")  # recorded, though nothing could be published
    assert decided["status"] == "approved"
    monkeypatch.undo()
    view = wait_for_run(run.id, ("succeeded", "failed"), timeout=90)  # the sweeper re-dispatches the quiet run
    assert view["status"] == "succeeded"
    assert {s["id"]: s["status"] for s in view["steps"]}["after"] == "succeeded"
