"""Human tasks and signals through the API, against real workers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.orchestra.api.conftest import APPROVAL, SIGNALLED, assert_error_shape
from tests.support.harness import wait_for_run, wait_until

pytestmark = pytest.mark.slow


def _parked(api: Any, key: Any, workflow: Any) -> tuple[str, str]:
    """A run of the approval workflow parked on its human task; returns (run id, task id)."""
    name = workflow(APPROVAL)
    response = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": "A1"}}, headers=key("submitter"))
    run_id = response.json()["id"]
    assert wait_for_run(run_id)["status"] == "waiting"
    lead = key("approver", ["leads"])
    tasks = wait_until(lambda: [t for t in api.get("/v1/tasks", headers=lead).json()["tasks"] if t["run_id"] == run_id],
                       what="the task in the leads' inbox")
    return run_id, tasks[0]["id"]


def test_an_approver_sees_and_decides_only_its_groups_tasks(api: Any, key: Any, workflow: Any, workers: Any) -> None:
    run_id, task_id = _parked(api, key, workflow)
    outsider = key("approver", ["finance"])
    assert task_id not in [t["id"] for t in api.get("/v1/tasks", headers=outsider).json()["tasks"]]
    refused = api.post(f"/v1/tasks/{task_id}/decision", json={"decision": "approve", "input": {"note": "ok"}},
                       headers=outsider)
    assert refused.status_code == 403
    assert_error_shape(refused.json())
    assert api.get(f"/v1/tasks/{task_id}", headers=outsider).status_code == 403

    lead = key("approver", ["leads"], name="lead-ann")
    task = api.get(f"/v1/tasks/{task_id}", headers=lead).json()
    assert task["title"] == "Refund A1?" and task["assignees"] == ["group:leads"] and task["level"] == 0
    bad = api.post(f"/v1/tasks/{task_id}/decision", json={"decision": "approve", "input": {"note": "x"}}, headers=lead)
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["input", "note"]

    good = api.post(f"/v1/tasks/{task_id}/decision", json={"decision": "approve", "input": {"note": "fine"}},
                    headers=lead)
    assert good.status_code == 200 and good.json()["status"] == "approved"
    assert good.json()["decided_by"] == "lead-ann"
    assert wait_for_run(run_id, ("succeeded", "failed"))["status"] == "succeeded"
    again = api.post(f"/v1/tasks/{task_id}/decision", json={"decision": "reject"}, headers=lead)
    assert again.status_code == 409
    assert_error_shape(again.json())
    events = api.get(f"/v1/runs/{run_id}/audit", headers=key("auditor")).json()
    assert events["verified"] and "lead-ann" in [e["actor"] for e in events["events"]]


def test_a_decision_raced_from_two_browsers_has_one_winner(api: Any, key: Any, workflow: Any, workers: Any) -> None:
    run_id, task_id = _parked(api, key, workflow)
    first, second = key("approver", ["leads"]), key("approver", ["leads"])

    def decide(headers: dict[str, str]) -> int:
        body = {"decision": "approve", "input": {"note": "race"}}
        return int(api.post(f"/v1/tasks/{task_id}/decision", json=body, headers=headers).status_code)

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(decide, [first, second]))
    assert codes == [200, 409]
    assert wait_for_run(run_id, ("succeeded", "failed"))["status"] == "succeeded"


def test_a_submitter_signals_its_own_run_but_not_anothers(api: Any, key: Any, workflow: Any, workers: Any) -> None:
    name = workflow(SIGNALLED)
    owner, stranger = key("submitter"), key("submitter")
    run_id = api.post("/v1/runs", json={"workflow": name, "input": {}}, headers=owner).json()["id"]
    assert wait_for_run(run_id)["status"] == "waiting"
    refused = api.post(f"/v1/runs/{run_id}/signals/go", json={"payload": {"n": 1}}, headers=stranger)
    assert refused.status_code == 403
    sent = api.post(f"/v1/runs/{run_id}/signals/go", json={"payload": {"n": 1}}, headers=owner)
    assert sent.status_code == 202 and sent.json()["status"] == "delivered"
    view = wait_for_run(run_id, ("succeeded", "failed"))
    assert view["status"] == "succeeded" and view["steps"][0]["output"] == {"n": 1}


def test_cancel_a_waiting_run_closes_it_and_a_second_cancel_is_409(
        api: Any, key: Any, workflow: Any, workers: Any) -> None:
    run_id, task_id = _parked(api, key, workflow)
    assert api.post(f"/v1/runs/{run_id}/cancel", headers=key("viewer")).status_code == 403
    admin = key("admin")
    cancelled = api.post(f"/v1/runs/{run_id}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert api.post(f"/v1/runs/{run_id}/cancel", headers=admin).status_code == 409
    assert api.post(f"/v1/runs/{run_id}/retry", headers=admin).status_code == 409
    late = api.post(f"/v1/tasks/{task_id}/decision", json={"decision": "approve", "input": {"note": "late"}},
                    headers=key("approver", ["leads"]))
    assert late.status_code == 409
