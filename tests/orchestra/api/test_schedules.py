"""``/v1/schedules``: create, list, delete, and field errors."""

from __future__ import annotations

from typing import Any

from tests.orchestra.api.conftest import SIMPLE, assert_error_shape, unique


def test_schedules_are_created_listed_and_deleted_through_the_api(api: Any, key: Any, register: Any) -> None:
    flow = unique("sched-wf")
    register(SIMPLE.format(name=flow))
    admin, viewer = key("admin"), key("viewer")
    body = {"name": unique("nightly"), "workflow": flow, "cron": "0 2 * * *", "timezone": "Europe/Paris",
            "input": {"order_id": "S"}, "overlap": "skip", "enabled": True}
    created = api.post("/v1/schedules", json=body, headers=admin)
    assert created.status_code == 201
    assert created.json()["next_run_at"].endswith("+00:00")
    assert created.json()["next_run_at"][11:13] in ("00", "01")  # 02:00 in Paris is 00:00 or 01:00 UTC
    listed = api.get("/v1/schedules", headers=viewer).json()["schedules"]
    assert body["name"] in [s["name"] for s in listed]
    assert api.delete(f"/v1/schedules/{body['name']}", headers=viewer).status_code == 403
    assert api.delete(f"/v1/schedules/{body['name']}", headers=admin).status_code == 204
    assert api.delete(f"/v1/schedules/{body['name']}", headers=admin).status_code == 404


def test_a_bad_cron_zone_or_workflow_is_422_naming_the_field(api: Any, key: Any, register: Any) -> None:
    flow = unique("sched-wf")
    register(SIMPLE.format(name=flow))
    good = {"name": unique("bad"), "workflow": flow, "cron": "*/5 * * * *"}
    for field, value in (("cron", "every day"), ("timezone", "Mars/Olympus"), ("workflow", "no-such-flow")):
        response = api.post("/v1/schedules", json={**good, field: value}, headers=key("admin"))
        assert response.status_code == 422, field
        assert_error_shape(response.json())
        assert response.json()["errors"][0]["loc"] == ["body", field]
