"""Health, readiness, metrics and the OpenAPI description."""

from __future__ import annotations

from typing import Any

import pytest

from tests.orchestra.api.conftest import assert_error_shape
from tests.support.harness import wait_for_run


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


@pytest.mark.slow
def test_metrics_count_runs_by_workflow_and_status_and_step_durations(
        api: Any, key: Any, workflow: Any, workers: Any) -> None:
    name = workflow()
    run_id = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": "M"}}, headers=key("submitter")).json()["id"]
    wait_for_run(run_id)
    text = api.get("/metrics").text
    assert f'orchestra_runs{{status="succeeded",workflow="{name}"}} 1.0' in text
    assert f'orchestra_step_duration_seconds_count{{workflow="{name}"}} 1.0' in text
    for family in ("orchestra_waiting_tasks", "orchestra_escalations_total", "orchestra_step_retries_total",
                   "orchestra_connector_errors_total", "orchestra_audit_events_total"):
        assert f"# TYPE {family.removesuffix('_total')}" in text, family


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
