"""Health, readiness, metrics and the OpenAPI description."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.orchestra.api.conftest import assert_error_shape
from tests.support.harness import wait_for_run, wait_until


def test_healthz_and_readyz_answer_without_a_key(api: Any) -> None:
    assert api.get("/healthz").json()["status"] == "ok"
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_is_503_naming_redis_when_redis_is_down(api: Any, monkeypatch: Any) -> None:
    import redis

    from orchestra import keys

    monkeypatch.setattr(keys, "client", lambda: redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5))
    ready = api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"].startswith("unavailable") and ready.json()["checks"]["database"] == "ok"


def _scrape(api: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``, parsed the way Prometheus parses it."""
    response = api.get("/metrics")
    assert response.status_code == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


METERED = """
name: {name}
connectors: [orders]
steps:
  - {{id: slow, uses: "task:tests.support.steps.slow", with: {{key: "{name}", seconds: 0.3}}}}
  - {{id: shaky, uses: "task:tests.support.steps.flaky", with: {{key: "{name}:{{{{ run.id }}}}", fail_times: 1}},
     retry: {{attempts: 2, backoff: 100ms}}}}
  - id: lookup
    uses: sql:orders
    if: "input.fail"
    with: {{query: "select id from no_such_table"}}
    retry: {{attempts: 2, backoff: 100ms}}
"""

ESCALATING = """
name: {name}
steps:
  - id: approve
    uses: human
    with: {{title: "Metered?", assignees: [group:leads], escalate: [{{after: 1s, to: [group:managers]}}]}}
"""


@pytest.mark.slow
def test_metrics_count_runs_by_workflow_and_status_and_step_durations(
        api: Any, key: Any, workflow: Any, workers: Any) -> None:
    before = _scrape(api)
    metered, escalating = workflow(METERED), workflow(ESCALATING)
    submitter = key("submitter")
    runs = [api.post("/v1/runs", json={"workflow": metered, "input": {"fail": fail}}, headers=submitter)
            for fail in (False, False, True)]
    runs.append(api.post("/v1/runs", json={"workflow": escalating, "input": {}}, headers=submitter))
    assert [r.status_code for r in runs] == [202] * 4, [r.text for r in runs]
    ids = [r.json()["id"] for r in runs]
    assert [wait_for_run(run_id, statuses=("succeeded", "failed"))["status"] for run_id in ids[:3]] == \
        ["succeeded", "succeeded", "failed"]
    wait_until(lambda: any(e["type"] == "human.escalated" for e in
                           api.get(f"/v1/runs/{ids[3]}/audit", headers=key("auditor")).json()["events"]),
               what="the task to escalate")

    after = _scrape(api)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert _value(after, "orchestra_runs", workflow=metered, status="succeeded") == 2
    assert _value(after, "orchestra_runs", workflow=metered, status="failed") == 1
    assert _value(after, "orchestra_runs", workflow=escalating, status="waiting") == 1
    # 3 slow + 3 shaky + 1 lookup (ended, failed) steps; the two skipped lookups never started
    assert _value(after, "orchestra_step_duration_seconds_count", workflow=metered) == 7
    assert _value(after, "orchestra_step_duration_seconds_bucket", workflow=metered, le="0.25") <= 4
    assert _value(after, "orchestra_step_duration_seconds_bucket", workflow=metered, le="+Inf") == 7
    assert _value(after, "orchestra_step_duration_seconds_sum", workflow=metered) >= 3 * 0.3
    assert _value(after, "orchestra_step_retries_total", workflow=metered) == 3 + 1  # each shaky once, lookup once
    assert grew("orchestra_connector_errors_total", connector="orders") == 2  # the lookup's retried and final failure
    assert grew("orchestra_escalations_total") == 1
    assert grew("orchestra_waiting_tasks", level="1") == 1
    assert grew("orchestra_audit_events_total", type="run.submitted") == 4
    assert grew("orchestra_audit_events_total", type="run.failed") == 1
    assert grew("orchestra_audit_events_total", type="human.escalated") == 1


def test_openapi_documents_every_route_with_models_and_the_error_shape(api: Any) -> None:
    spec = api.get("/openapi.json").json()
    expected = {("post", "/v1/workflows"), ("get", "/v1/workflows"), ("get", "/v1/workflows/{name}"),
                ("post", "/v1/runs"), ("get", "/v1/runs"), ("get", "/v1/runs/{run_id}"),
                ("post", "/v1/runs/{run_id}/cancel"), ("post", "/v1/runs/{run_id}/retry"),
                ("post", "/v1/runs/{run_id}/signals/{name}"), ("get", "/v1/runs/{run_id}/audit"),
                ("get", "/v1/tasks"), ("post", "/v1/tasks/{task_id}/decision"), ("get", "/v1/schedules"),
                ("post", "/v1/schedules"), ("delete", "/v1/schedules/{name}"), ("get", "/healthz"),
                ("get", "/readyz"), ("get", "/metrics")}
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= documented
    for method, path in expected:
        if path.startswith("/v1/"):
            responses = spec["paths"][path][method]["responses"]
            assert responses["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
            assert "HTTPValidationError" not in str(responses)
    assert spec["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] \
        .endswith("/RunSubmit")


def test_a_wrong_method_gets_405_in_the_error_shape(api: Any, admin: Any) -> None:
    response = api.put("/v1/runs", headers=admin)
    assert response.status_code == 405
    assert_error_shape(response.json())
