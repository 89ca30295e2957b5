"""Submitting and reading runs, workflows and audit trails through the API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.orchestra.api.conftest import assert_error_shape
from tests.support.harness import wait_for_run


def _run_count(workflow: str) -> int:
    from orchestra import db
    from orchestra.models import Run

    with db.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(Run).where(Run.workflow == workflow)) or 0)


def test_unknown_ids_get_404_in_the_error_shape(api: Any, admin: Any) -> None:
    uuid = "01900000-0000-7000-8000-000000000000"
    for path in (f"/v1/runs/{uuid}", "/v1/runs/not-a-uuid", f"/v1/runs/{uuid}/audit", "/v1/workflows/no-such-flow",
                 f"/v1/tasks/{uuid}", "/v1/tasks/nope", "/v1/no-such-endpoint"):
        response = api.get(path, headers=admin)
        assert response.status_code == 404, path
        assert_error_shape(response.json())
    for path in (f"/v1/runs/{uuid}/cancel", f"/v1/runs/{uuid}/retry", f"/v1/tasks/{uuid}/decision"):
        response = api.post(path, json={"decision": "approve"}, headers=admin)
        assert response.status_code == 404, path
    assert api.delete("/v1/schedules/no-such-schedule", headers=admin).status_code == 404
    response = api.post("/v1/runs", json={"workflow": "no-such-flow", "input": {}}, headers=admin)
    assert response.status_code == 404 and "no workflow named" in response.json()["errors"][0]["msg"]


def test_a_malformed_yaml_spec_gets_422_with_loc(api: Any, admin: Any) -> None:
    response = api.post("/v1/workflows", content="name: broken\nsteps: [\n  - id: a\n", headers=admin)
    assert response.status_code == 422
    assert_error_shape(response.json())
    assert response.json()["errors"][0]["loc"] == ["body"]
    assert "line" in response.json()["errors"][0]["msg"]


def test_an_invalid_spec_names_each_bad_field(api: Any, admin: Any) -> None:
    spec = {"name": "Bad Name", "steps": [{"id": "a", "uses": "teleport:x"}]}
    response = api.post("/v1/workflows", json=spec, headers=admin)
    assert response.status_code == 422
    locs = [e["loc"] for e in response.json()["errors"]]
    assert ["name"] in locs and ["steps", 0, "uses"] in locs, locs


def test_a_spec_registers_as_yaml_or_json_and_reads_back(api: Any, admin: Any, key: Any) -> None:
    from tests.orchestra.api.conftest import SIMPLE, unique

    name = unique("api-reg")
    first = api.post("/v1/workflows", content=SIMPLE.format(name=name), headers=admin)
    assert first.status_code == 201 and first.json() == {"name": name, "version": 1}
    spec = api.get(f"/v1/workflows/{name}", headers=admin).json()["spec"]
    spec["steps"][0]["with"]["value"] = "changed"
    spec.pop("version")
    second = api.post("/v1/workflows", json=spec, headers=admin)
    assert second.status_code == 201 and second.json()["version"] == 2
    listed = {w["name"]: w for w in api.get("/v1/workflows", headers=key("viewer")).json()["workflows"]}
    assert listed[name]["version"] == 2 and listed[name]["versions"] == 2


def test_idempotency_same_body_same_run_different_body_409(api: Any, key: Any, workflow: Any) -> None:
    name = workflow()
    headers = {**key("submitter"), "Idempotency-Key": "order-A1"}
    body = {"workflow": name, "input": {"order_id": "A1"}}
    first = api.post("/v1/runs", json=body, headers=headers)
    again = api.post("/v1/runs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    in_body = api.post("/v1/runs", json={**body, "idempotency_key": "order-A1"}, headers=key("submitter"))
    assert in_body.json()["id"] == first.json()["id"]

    other = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": "B2"}}, headers=headers)
    assert other.status_code == 409
    assert_error_shape(other.json())
    assert _run_count(name) == 1

    clash = api.post("/v1/runs", json={**body, "idempotency_key": "other"}, headers=headers)
    assert clash.status_code == 422 and clash.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def test_input_that_fails_the_schema_gets_422_and_creates_no_run(api: Any, key: Any, workflow: Any) -> None:
    name = workflow()
    response = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": 7}}, headers=key("submitter"))
    assert response.status_code == 422
    assert_error_shape(response.json())
    assert response.json()["errors"][0]["loc"] == ["input", "order_id"]
    missing = api.post("/v1/runs", json={"workflow": name, "input": {}}, headers=key("submitter"))
    assert missing.status_code == 422
    assert _run_count(name) == 0


def test_a_request_with_unknown_fields_names_them(api: Any, key: Any, workflow: Any) -> None:
    response = api.post("/v1/runs", json={"workflow": workflow(), "inputs": {}}, headers=key("submitter"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "inputs"]
    assert "remove this field" in response.json()["errors"][0]["msg"]


def test_a_body_over_the_limit_gets_413(api: Any, admin: Any, workflow: Any) -> None:
    from orchestra.settings import get_settings

    huge = {"workflow": workflow(), "input": {"order_id": "x" * (get_settings().max_body_bytes + 10)}}
    response = api.post("/v1/runs", json=huge, headers=admin)
    assert response.status_code == 413
    assert_error_shape(response.json())

    def chunks() -> Any:
        for _ in range(get_settings().max_body_bytes // 65536 + 2):
            yield b" " * 65536  # no Content-Length: the limit holds for a streamed body too

    streamed = api.post("/v1/runs", content=chunks(), headers={**admin, "Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_nul_characters_are_refused_at_the_edge_with_422_and_write_nothing(api: Any, admin: Any, workflow: Any) -> None:
    from orchestra import db
    from orchestra.models import Run

    with db.read_session() as session:
        before = session.scalar(select(func.count()).select_from(Run))
    for body in ({"workflow": "\u0000", "input": {}}, {"workflow": workflow(), "input": {"order_id": "a\u0000b"}},
                 {"workflow": workflow(), "input": {"order_id": "A1"}, "idempotency_key": "k\u0000"}):
        response = api.post("/v1/runs", json=body, headers=admin)
        assert response.status_code == 422, body
        assert_error_shape(response.json())
        assert response.json()["errors"][0]["loc"] == ["body"]
    listed = api.get("/v1/runs?workflow=%00", headers=admin)
    assert listed.status_code == 422 and listed.json()["errors"][0]["loc"] == ["query"]
    assert api.get("/v1/workflows/a%00b", headers=admin).status_code == 422
    with db.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == before


def test_nan_and_infinity_in_a_json_body_are_refused_with_422_and_write_nothing(
        api: Any, admin: Any, workflow: Any) -> None:
    from orchestra import db
    from orchestra.models import Run

    name = workflow()
    with db.read_session() as session:
        before = session.scalar(select(func.count()).select_from(Run))
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = f'{{"workflow": "{name}", "input": {{"order_id": "A1", "score": {constant}}}}}'
        response = api.post("/v1/runs", content=body, headers={**admin, "Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert_error_shape(response.json())
        assert constant in response.json()["errors"][0]["msg"]
    quoted = f'{{"workflow": "{name}", "input": {{"order_id": "NaN Infinity"}}}}'  # inside a string it is text
    assert api.post("/v1/runs", content=quoted, headers={**admin, "Content-Type": "application/json"}).status_code == 202
    with db.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == before + 1


def test_a_cursor_that_is_not_a_run_id_is_refused_with_422(api: Any, admin: Any) -> None:
    response = api.get("/v1/runs?cursor=garbage", headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "cursor"]
    assert "next_cursor" in response.json()["errors"][0]["msg"]


def test_an_unpaired_surrogate_is_refused_with_422_while_a_paired_one_is_text(api: Any, admin: Any, workflow: Any) -> None:
    from orchestra import db
    from orchestra.models import Run

    name = workflow()
    with db.read_session() as session:
        before = session.scalar(select(func.count()).select_from(Run))
    lone = '{"workflow": "%s", "input": {"order_id": "A\\ud800"}}' % name
    response = api.post("/v1/runs", content=lone, headers={**admin, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert_error_shape(response.json())
    assert "unpaired UTF-16 surrogate" in response.json()["errors"][0]["msg"]
    paired = '{"workflow": "%s", "input": {"order_id": "A\\ud83d\\ude00"}}' % name  # an emoji, escaped
    response = api.post("/v1/runs", content=paired, headers={**admin, "Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    assert response.json()["input"]["order_id"] == "A\U0001F600"
    with db.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == before + 1


@pytest.mark.slow
def test_a_run_submitted_through_the_api_succeeds_with_a_verified_audit_trail(
        api: Any, key: Any, workflow: Any, workers: Any) -> None:
    name = workflow()
    submitted = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": "A1"}}, headers=key("submitter"))
    # The answer is the run as it stands once enqueued: a worker may already have started it.
    assert submitted.status_code == 202 and submitted.json()["status"] in ("pending", "running", "succeeded")
    assert submitted.headers["location"] == f"/v1/runs/{submitted.json()['id']}"
    run_id = submitted.json()["id"]
    wait_for_run(run_id)
    run = api.get(f"/v1/runs/{run_id}", headers=key("viewer")).json()
    assert run["status"] == "succeeded" and run["output"] == {"order": "A1"}
    assert run["steps"][0]["status"] == "succeeded" and run["steps"][0]["attempts"] == 1

    auditor = key("auditor")
    trail = api.get(f"/v1/runs/{run_id}/audit", headers=auditor).json()
    assert trail["verified"] is True
    assert [e["type"] for e in trail["events"]][0] == "run.submitted"
    assert trail["events"][-1]["type"] == "run.succeeded"
    lines = api.get(f"/v1/runs/{run_id}/audit", headers={**auditor, "Accept": "application/x-ndjson"})
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in lines.text.splitlines()] == trail["events"]


@pytest.mark.slow
def test_redis_down_gets_503_and_the_run_is_dispatched_after_it_returns(
        api: Any, key: Any, workflow: Any, workers: Any, monkeypatch: Any) -> None:
    """The API's broker is unreachable; the run is recorded pending and the workers' sweeper dispatches it."""
    from celery import Celery

    import orchestra.broker as broker

    dead = Celery("dead", broker="redis://127.0.0.1:1/0", set_as_current=False)
    dead.conf.broker_connection_timeout = 0.5
    monkeypatch.setattr(broker, "_app", dead)
    name = workflow()
    body = {"workflow": name, "input": {"order_id": "A1"}, "idempotency_key": "during-outage"}
    response = api.post("/v1/runs", json=body, headers=key("submitter", name="outage-service"))
    assert response.status_code == 503
    assert_error_shape(response.json())
    assert response.headers["retry-after"]
    runs = api.get(f"/v1/runs?workflow={name}", headers=key("viewer")).json()["runs"]
    assert [r["status"] for r in runs] == ["pending"]

    monkeypatch.undo()  # Redis is back
    view = wait_for_run(runs[0]["id"], timeout=90)
    assert view["status"] == "succeeded"
    replay = api.post("/v1/runs", json=body, headers=key("submitter", name="outage-service-2"))
    assert replay.status_code == 202 and replay.json()["id"] == runs[0]["id"]


FLAKY = """
name: {name}
steps:
  - id: first
    uses: task:tests.support.steps.count
    with: {{key: "api:{name}:first"}}
  - id: second
    uses: task:tests.support.steps.flaky
    with: {{key: "api:{name}:second", fail_times: 1}}
    retry: {{attempts: 1}}
"""


@pytest.mark.slow
def test_retry_resumes_a_failed_run_without_rerunning_succeeded_steps(
        api: Any, key: Any, workflow: Any, workers: Any, redis_client: Any) -> None:
    name = workflow(FLAKY)
    admin = key("admin")
    run_id = api.post("/v1/runs", json={"workflow": name, "input": {}}, headers=admin).json()["id"]
    assert wait_for_run(run_id)["status"] == "failed"
    assert api.post(f"/v1/runs/{run_id}/retry", headers=key("submitter")).status_code == 403
    retried = api.post(f"/v1/runs/{run_id}/retry", headers=admin)
    assert retried.status_code == 202
    assert wait_for_run(run_id, ("succeeded", "failed"))["status"] == "succeeded"
    assert redis_client.get(f"api:{name}:first") == "1"
