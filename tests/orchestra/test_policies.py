"""Approval policies: quorum, four eyes, and decisions bound to the payload that was shown."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from orchestra import db
from orchestra.decisions import decide
from orchestra.errors import AlreadyDecided, NotAssignee, PayloadChanged
from orchestra.models import StepRun
from orchestra.runs import submit_run
from tests.orchestra.waitkit import approval_spec, audit_of, event_types, open_task_of, unique
from tests.support.harness import wait_for_run


def test_quorum_needs_n_distinct_approvers(workers, register):
    name = unique("quorum")
    register(approval_spec(name, assignees="[group:leads]", extra="      quorum: 2"))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)

    assert decide(task["id"], "approve", "alice", ["leads"])["status"] == "open"
    with pytest.raises(AlreadyDecided, match="alice already"):
        decide(task["id"], "approve", "alice", ["leads"])
    assert wait_for_run(run.id)["status"] == "waiting"
    assert decide(task["id"], "approve", "bob", ["leads"])["status"] == "approved"

    view = wait_for_run(run.id, ("succeeded", "failed"))
    assert view["status"] == "succeeded"
    output = {s["id"]: s["output"] for s in view["steps"]}["approve"]
    assert sorted(output["approvers"]) == ["alice", "bob"] and output["decided_by"] == "bob"
    assert event_types(run.id).count("human.voted:approve") == 1


def test_one_reject_decides_a_quorum(workers, register):
    name = unique("quorumreject")
    register(approval_spec(name, assignees="[group:leads]", on_reject="fail", extra="      quorum: 3"))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    decide(task["id"], "approve", "alice", ["leads"])
    assert decide(task["id"], "reject", "bob", ["leads"], comment="no")["status"] == "rejected"
    assert wait_for_run(run.id, ("succeeded", "failed"))["status"] == "failed"


def test_four_eyes_stops_the_submitter_from_approving_their_own_run(workers, register):
    name = unique("foureyes")
    register(approval_spec(name, assignees="[group:leads]", extra="      four_eyes: true"))
    run, _ = submit_run(name, {"what": "x"}, actor="alice")
    task = open_task_of(run.id)
    with pytest.raises(NotAssignee, match="four eyes: alice submitted run"):
        decide(task["id"], "approve", "alice", ["leads"])
    decide(task["id"], "approve", "carol", ["leads"])
    assert wait_for_run(run.id, ("succeeded", "failed"))["status"] == "succeeded"


def test_a_decision_is_refused_when_the_payload_it_binds_to_has_changed(workers, register):
    name = unique("binding")
    register(approval_spec(name))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    with pytest.raises(PayloadChanged, match="reload the task"):
        decide(task["id"], "approve", "alice", payload_hash="0" * 64)

    # An upstream step re-run with a different result, after the approver saw the task:
    with db.write_session() as session:
        session.execute(update(StepRun).where(StepRun.run_id == run.id, StepRun.step_id == "before").values(output=99))
    with pytest.raises(PayloadChanged, match="has changed since it was shown"):
        decide(task["id"], "approve", "alice", payload_hash=task["payload_hash"])

    refreshed = open_task_of(run.id)
    assert refreshed["show"] == {"total": 99} and refreshed["payload_hash"] != task["payload_hash"]
    decide(task["id"], "approve", "alice", payload_hash=refreshed["payload_hash"])
    assert wait_for_run(run.id, ("succeeded", "failed"))["status"] == "succeeded"
    events, verified = audit_of(run.id)
    assert verified
    changed = next(e for e in events if e.type == "human.payload_changed")
    assert changed.payload["old_hash"] == task["payload_hash"]
