"""A run's business key: given on submission, shown on the run, and searched by with ``GET /v1/runs?key=``."""

from __future__ import annotations

import asyncio
from typing import Any

from orchestra.client import AsyncClient, Client
from tests.orchestra.api.conftest import assert_error_shape, unique
from tests.orchestra.api.test_client import server  # noqa: F401 - the uvicorn fixture


def test_runs_are_found_by_the_business_key_they_were_submitted_with(api: Any, key: Any, workflow: Any) -> None:
    name, order = workflow(), unique("order")
    headers = key("submitter")
    mine = [api.post("/v1/runs", json={"workflow": name, "input": {"order_id": order}, "key": order},
                     headers=headers) for _ in range(2)]
    other = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": "B7"}, "key": unique("order")},
                     headers=headers)
    unkeyed = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": order}}, headers=headers)
    assert [r.status_code for r in (*mine, other, unkeyed)] == [202, 202, 202, 202]
    assert mine[0].json()["key"] == order and unkeyed.json()["key"] is None

    found = api.get("/v1/runs", params={"key": order}, headers=headers)

    assert found.status_code == 200
    assert [r["id"] for r in found.json()["runs"]] == [mine[1].json()["id"], mine[0].json()["id"]]
    assert {r["key"] for r in found.json()["runs"]} == {order}
    assert api.get(f"/v1/runs/{mine[0].json()['id']}", headers=headers).json()["key"] == order
    everything = {r["id"] for r in api.get("/v1/runs", params={"workflow": name}, headers=headers).json()["runs"]}
    assert everything == {r.json()["id"] for r in (*mine, other, unkeyed)}


def test_a_business_key_cannot_reach_another_submitters_runs(api: Any, key: Any, workflow: Any) -> None:
    name, order = workflow(), unique("order")
    theirs = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": order}, "key": order},
                      headers=key("submitter"))
    assert theirs.status_code == 202

    mine = api.get("/v1/runs", params={"key": order}, headers=key("submitter"))
    viewer = api.get("/v1/runs", params={"key": order}, headers=key("viewer"))

    assert mine.status_code == 200 and mine.json()["runs"] == []
    assert [r["id"] for r in viewer.json()["runs"]] == [theirs.json()["id"]]


def test_an_idempotent_repeat_with_another_business_key_gets_409(api: Any, key: Any, workflow: Any) -> None:
    name = workflow()
    headers = {**key("submitter"), "Idempotency-Key": unique("idem")}
    body = {"workflow": name, "input": {"order_id": "A1"}, "key": "A1"}
    first = api.post("/v1/runs", json=body, headers=headers)
    again = api.post("/v1/runs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202 and again.json()["id"] == first.json()["id"]

    clash = api.post("/v1/runs", json={**body, "key": "A2"}, headers=headers)

    assert clash.status_code == 409
    assert_error_shape(clash.json())
    assert "business key 'A1'" in clash.json()["errors"][0]["msg"]


def test_a_business_key_that_is_empty_too_long_or_has_control_characters_gets_422(
        api: Any, admin: Any, workflow: Any) -> None:
    name = workflow()
    for bad in ("", "x" * 201, "A1\nA2"):
        response = api.post("/v1/runs", json={"workflow": name, "input": {"order_id": "A1"}, "key": bad},
                            headers=admin)
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["loc"] == ["body", "key"], bad
    assert api.get("/v1/runs", params={"key": ""}, headers=admin).status_code == 422


def test_the_clients_submit_a_business_key_and_list_by_it(server: str, key: Any, workflow: Any) -> None:  # noqa: F811
    name, order = workflow(), unique("order")
    token = key("submitter")["Authorization"].removeprefix("Bearer ")
    with Client(server, token) as orchestra:
        run = orchestra.submit(name, {"order_id": order}, key=order)
        orchestra.submit(name, {"order_id": order})
        assert run["key"] == order
        assert [r["id"] for r in orchestra.list_runs(key=order)["runs"]] == [run["id"]]

    async def from_async() -> list[str]:
        async with AsyncClient(server, token) as orchestra:
            again = await orchestra.submit(name, {"order_id": order}, key=order)
            return [again["id"], *(r["id"] for r in (await orchestra.list_runs(key=order))["runs"])]

    again, *listed = asyncio.run(from_async())
    assert listed == [again, run["id"]]
