"""Parked runs on real workers and a real Redis: branches, deadlines, escalation, cancel, recovery, restarts."""

from __future__ import annotations

import time

import pytest

from orchestra import keys
from orchestra.decisions import decide
from orchestra.errors import TaskExpired
from orchestra.runs import cancel_run, submit_run
from orchestra.waits import recover
from tests.orchestra.waitkit import approval_spec, audit_of, event_types, open_task_of, unique
from tests.support.harness import wait_for_run, wait_until


def test_a_wait_in_one_branch_lets_the_other_branch_finish_and_the_join_waits_for_the_decision(workers, register):
    name = unique("branches")
    register(f"""
name: {name}
steps:
  - {{id: start, uses: "task:tests.support.steps.add", with: {{a: 1, b: 1}}}}
  - {{id: ask, uses: human, needs: [start], with: {{title: "ok?", assignees: [alice]}}}}
  - {{id: after_ask, uses: "task:tests.support.steps.add", needs: [ask], with: {{a: 1, b: 2}}}}
  - {{id: other, uses: "task:tests.support.steps.add", needs: [start], with: {{a: 5, b: 5}}}}
  - {{id: join, uses: "task:tests.support.steps.add", needs: [after_ask, other],
      with: {{a: "{{{{ steps.after_ask.output }}}}", b: "{{{{ steps.other.output }}}}"}}}}
""")
    run, _ = submit_run(name, {})
    task = open_task_of(run.id)
    view = wait_until(lambda: (v := wait_for_run(run.id)) and {s["id"]: s["status"] for s in v["steps"]}["other"]
                      == "succeeded" and v, what="the other branch")
    statuses = {s["id"]: s["status"] for s in view["steps"]}
    assert statuses["ask"] == "waiting" and statuses["join"] == "pending" and statuses["after_ask"] == "pending"
    time.sleep(0.5)
    assert wait_for_run(run.id)["status"] == "waiting"

    decide(task["id"], "approve", "alice")

    done = wait_for_run(run.id, ("succeeded", "failed"))
    assert done["status"] == "succeeded"
    steps = {s["id"]: s for s in done["steps"]}
    assert steps["join"]["output"] == 13
    assert steps["join"]["started_at"] >= steps["ask"]["finished_at"]


def test_a_deadline_escalates_twice_then_auto_rejects(workers, register):
    name = unique("escalate")
    register(approval_spec(name, assignees="[group:leads]", on_reject="fail", extra="""      escalate:
        - {after: 1s, to: [group:managers]}
        - {after: 2s, to: [group:directors]}
        - {after: 3s, action: reject}"""))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    assert task["level"] == 0

    view = wait_for_run(run.id, ("succeeded", "failed"), timeout=20)

    assert view["status"] == "failed"
    assert "rejected by system:escalation" in view["error"]
    events, verified = audit_of(run.id)
    assert verified
    escalations = [e.payload for e in events if e.type == "human.escalated"]
    assert [(e.get("level"), e.get("assignees"), e.get("action")) for e in escalations] == [
        (1, ["group:managers"], None), (2, ["group:directors"], None), (2, None, "reject")]
    decided = next(e for e in events if e.type == "human.decided")
    assert decided.actor == "system:escalation" and decided.payload["decision"] == "reject"
    with pytest.raises(Exception, match="already decided by system:escalation"):
        decide(task["id"], "approve", "boss", ["directors"])


def test_a_timeout_without_escalation_fails_the_step_with_a_timeout_error(workers, register):
    name = unique("timeout")
    register(approval_spec(name, extra="      timeout: 1s"))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    view = wait_for_run(run.id, ("succeeded", "failed"), timeout=15)
    assert view["status"] == "failed"
    assert "timed out" in view["error"] and "1s" in view["error"]
    assert "human.expired:approve" in event_types(run.id)
    with pytest.raises(TaskExpired, match="expired"):
        decide(task["id"], "approve", "alice")


def test_cancel_closes_the_open_task_and_a_later_decision_is_refused(workers, register, redis_client):
    name = unique("cancel")
    register(approval_spec(name))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    cancel_run(run.id, actor="ops", reason="not needed")
    assert not redis_client.exists(keys.WAIT + task["id"])
    assert redis_client.zscore(keys.DEADLINES, task["id"]) is None
    with pytest.raises(TaskExpired, match="closed"):
        decide(task["id"], "approve", "alice")
    assert wait_for_run(run.id)["status"] == "cancelled"
    assert "run.cancelled" in event_types(run.id) and audit_of(run.id)[1]


def test_a_parked_run_survives_redis_flushall_after_recover(workers, register, redis_client):
    name = unique("flush")
    register(approval_spec(name, extra="      escalate: [{after: 1h, to: [group:managers]}]"))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    deadline = redis_client.zscore(keys.DEADLINES, task["id"])

    redis_client.flushall()
    assert not redis_client.exists(keys.WAIT + task["id"])
    rebuilt = recover()

    assert rebuilt >= 1
    assert redis_client.hget(keys.WAIT + task["id"], "r") == run.id
    assert redis_client.zscore(keys.DEADLINES, task["id"]) == pytest.approx(deadline, abs=0.01)
    decide(task["id"], "approve", "alice")
    assert wait_for_run(run.id, ("succeeded", "failed"))["status"] == "succeeded"


def test_a_waiting_run_survives_a_restart_of_all_workers(isolated_workers, register):
    name = unique("restart")
    register(approval_spec(name))
    first = isolated_workers()
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    first.kill9()

    isolated_workers()
    decide(task["id"], "approve", "alice")

    view = wait_for_run(run.id, ("succeeded", "failed"))
    assert view["status"] == "succeeded"
    assert {s["id"]: s["output"] for s in view["steps"]}["after"] == 13


def test_the_sweeper_restores_a_wait_redis_lost_and_its_deadline_still_fires(workers, register, redis_client):
    name = unique("heal")
    register(approval_spec(name, extra="      timeout: 2s"))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    redis_client.delete(keys.WAIT + task["id"], keys.RECONCILE)  # as if the parking worker died before writing it
    redis_client.zrem(keys.DEADLINES, task["id"])

    wait_until(lambda: redis_client.exists(keys.WAIT + task["id"]), timeout=10, what="the sweeper to restore the wait")

    view = wait_for_run(run.id, ("succeeded", "failed"), timeout=15)
    assert view["status"] == "failed" and "timed out" in view["error"]
