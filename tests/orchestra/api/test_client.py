"""The Python client against a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from orchestra import client as oc
from tests.orchestra.api.conftest import APPROVAL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(app: Any) -> Iterator[str]:
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def _token(key: Any, role: str, groups: list[str] | None = None, name: str | None = None) -> str:
    return str(key(role, groups, name=name)["Authorization"].removeprefix("Bearer "))


@pytest.mark.slow
def test_service_submits_approver_decides_auditor_verifies_each_with_its_own_key(
        server: str, key: Any, workflow: Any, workers: Any) -> None:
    name = workflow(APPROVAL)
    with oc.Client(server, _token(key, "submitter", name="client-service")) as service, \
            oc.Client(server, _token(key, "approver", ["leads"], name="client-lead")) as lead, \
            oc.Client(server, _token(key, "auditor")) as auditor:
        run = service.submit(name, {"order_id": "C1"}, idempotency_key="C1")
        assert service.submit(name, {"order_id": "C1"}, idempotency_key="C1")["id"] == run["id"]
        assert service.wait(run["id"], timeout=60)["status"] == "waiting"
        with pytest.raises(oc.Forbidden):
            service.tasks()
        with pytest.raises(oc.Forbidden):
            lead.get(run["id"])
        task = next(t for t in lead.tasks() if t["run_id"] == run["id"])
        with pytest.raises(oc.InvalidRequest) as invalid:
            lead.decide(task["id"], "approve", {"note": 1})
        assert invalid.value.errors[0]["loc"] == ["input", "note"]
        lead.decide(task["id"], "approve", {"note": "ok"}, comment="fine")
        with pytest.raises(oc.Conflict):
            lead.decide(task["id"], "approve", {"note": "again"})
        done = service.wait(run["id"], timeout=60, statuses=frozenset({"succeeded", "failed"}))
        assert done["status"] == "succeeded"
        with pytest.raises(oc.Forbidden):
            service.audit(run["id"])
        trail = auditor.audit(run["id"])
        assert trail["verified"] is True
        assert {"client-service", "client-lead"} <= {e["actor"] for e in trail["events"]}
        assert auditor.audit_lines(run["id"]) == trail["events"]
        assert [r["id"] for r in service.list_runs(workflow=name)["runs"]] == [run["id"]]


def test_errors_are_typed_and_carry_the_error_items(server: str, key: Any, workflow: Any) -> None:
    name = workflow()
    with oc.Client(server, "orc_nope_nope") as stranger:
        with pytest.raises(oc.Unauthorized):
            stranger.list_runs()
    with oc.Client(server, _token(key, "submitter")) as service:
        with pytest.raises(oc.NotFound):
            service.get("01900000-0000-7000-8000-000000000000")
        with pytest.raises(oc.InvalidRequest) as bad:
            service.submit(name, {"order_id": 5})
        assert bad.value.status_code == 422 and bad.value.errors[0]["loc"] == ["input", "order_id"]
        service.submit(name, {"order_id": "X"}, idempotency_key="k1")
        with pytest.raises(oc.Conflict):
            service.submit(name, {"order_id": "Y"}, idempotency_key="k1")
        with pytest.raises(oc.Forbidden):
            service.cancel(service.list_runs(workflow=name)["runs"][0]["id"])


def test_wait_gives_up_with_wait_timeout(server: str, key: Any, workflow: Any) -> None:
    from orchestra.runs import submit_run

    run, _ = submit_run(workflow(), {"order_id": "T"}, actor="viewer-test", dispatch=False)
    with oc.Client(server, _token(key, "viewer")) as viewer, pytest.raises(oc.WaitTimeout):
        viewer.wait(run.id, timeout=0.5, statuses=frozenset({"succeeded"}))


def test_the_async_client_has_the_same_calls(server: str, key: Any, workflow: Any) -> None:
    name = workflow(APPROVAL)  # parks, so it is still cancellable whether or not a worker picks it up

    async def scenario() -> None:
        async with oc.AsyncClient(server, _token(key, "admin")) as admin:
            run = await admin.submit(name, {"order_id": "A"})
            assert (await admin.get(run["id"]))["workflow"] == name
            assert (await admin.list_runs(workflow=name, limit=1))["runs"][0]["id"] == run["id"]
            cancelled = await admin.cancel(run["id"])
            assert cancelled["status"] == "cancelled"
            with pytest.raises(oc.Conflict):
                await admin.retry(run["id"])
            assert (await admin.wait(run["id"], timeout=5))["status"] == "cancelled"
            assert (await admin.audit(run["id"]))["verified"] is True
            assert isinstance(await admin.tasks(), list)

    asyncio.run(scenario())


def test_each_client_error_is_the_library_error_for_the_same_thing():
    from orchestra import client, errors

    pairs = {client.Unauthorized: errors.AuthError, client.Forbidden: errors.Forbidden,
             client.NotFound: errors.NotFound, client.Conflict: errors.Conflict,
             client.InvalidRequest: errors.InputError, client.Unavailable: errors.Unavailable}
    for client_error, library_error in pairs.items():
        raised = client_error("409: x", [{"loc": ["body"], "msg": "m", "type": "t"}])
        assert isinstance(raised, library_error) and isinstance(raised, errors.OrchestraError), client_error
        assert raised.message == "409: x" and raised.errors == [{"loc": ["body"], "msg": "m", "type": "t"}]
    assert client.Unavailable("503: down").retryable and not client.Conflict("409: x").retryable
