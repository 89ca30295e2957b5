"""The demo systems of record and the refund-request workflow end to end, as ``make run`` shows them.

``orchestra demo-systems`` runs as its own process on a free port with its own
business database; the workers reach it through ``ORCHESTRA_PAYMENTS_URL``,
``ORCHESTRA_CRM_URL`` and ``ORCHESTRA_ORDERS_DATABASE_URL``, as in
``tests/orchestra/connectors/test_workers.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestra import db
from orchestra.audit import list_events, verify_chain
from orchestra.decisions import decide, list_tasks
from orchestra.runs import submit_run
from tests.support.harness import ROOT, wait_for_run, wait_until

pytestmark = pytest.mark.slow


@dataclass
class Demo:
    url: str
    database: Path
    process: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        return {"ORCHESTRA_PAYMENTS_URL": self.url, "ORCHESTRA_CRM_URL": self.url + "/crm",
                "ORCHESTRA_ORDERS_DATABASE_URL": f"sqlite:///{self.database}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    port, database = free_port(), tmp_path / "business.db"
    env = {k: v for k, v in os.environ.items() if k not in ("ORCHESTRA_PAYMENTS_TOKEN", "ORCHESTRA_CRM_API_KEY")}
    process = subprocess.Popen([sys.executable, "-m", "orchestra.cli", "demo-systems", "--port", str(port),
                                "--database", str(database), "--flaky", "1"], cwd=ROOT, env=env,
                               stdout=open(tmp_path / "demo.log", "ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), timeout=30, what="the demo systems to answer /health")
        yield Demo(url, database, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).json()["demo"] is True
    except httpx.HTTPError:
        return False


def events_of(run_id: str) -> list[dict[str, Any]]:
    with db.read_session() as session:
        events = list_events(session, run_id)
        assert verify_chain(events).verified
        return [{"type": e.type, "step_id": e.step_id, "payload": e.payload} for e in events]


def test_the_demo_payments_api_refunds_once_per_idempotency_key(demo: Demo) -> None:
    with httpx.Client(base_url=demo.url) as http:
        first = http.post("/refunds", json={"order_id": "A3"}, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 503, "--flaky 1 refuses each new key once"
        applied = http.post("/refunds", json={"order_id": "A3"}, headers={"Idempotency-Key": "k-1"})
        again = http.post("/refunds", json={"order_id": "A3"}, headers={"Idempotency-Key": "k-1"})
        other_body = http.post("/refunds", json={"order_id": "A1"}, headers={"Idempotency-Key": "k-1"})
        too_much = http.post("/refunds", json={"order_id": "A3", "amount": 500}, headers={"Idempotency-Key": "k-2"})
        too_much = http.post("/refunds", json={"order_id": "A3", "amount": 500}, headers={"Idempotency-Key": "k-2"})
        fetched = http.get(f"/refunds/{applied.json()['refund_id']}")

    assert applied.status_code == 201 and applied.json()["amount"] == 19.99 and applied.json()["demo"] is True
    assert again.status_code == 200 and again.json() == applied.json()
    assert other_body.status_code == 409
    assert too_much.status_code == 422 and "at most" in too_much.json()["error"]
    assert fetched.json() == applied.json()


def test_a_small_refund_request_runs_end_to_end_on_the_demo_systems(isolated_workers, demo: Demo) -> None:
    isolated_workers(concurrency=2, env=demo.env())
    run, _ = submit_run("refund-request", {"order_id": "A1", "message": "I was charged twice, I want my money back"})

    view = wait_for_run(run.id, statuses=("succeeded", "failed", "waiting"), timeout=60)

    assert view["status"] == "succeeded", view
    assert view["output"]["category"] == "refund" and view["output"]["approval"] == "not needed"
    refund = view["output"]["refund"]
    assert refund["order_id"] == "A1" and refund["amount"] == 42.5 and refund["idempotency_key"] == f"{run.id}:refund:-1"
    assert httpx.get(f"{demo.url}/refunds/{refund['refund_id']}").json()["refund_id"] == refund["refund_id"]
    events = events_of(run.id)
    called = {e["type"]: e["payload"] for e in events if e["type"] in ("llm.called", "sql.called")}
    assert called["llm.called"]["provider"] == "offline" and called["llm.called"]["tokens"]["total"] > 0
    http_calls = [e["payload"] for e in events if e["type"] == "http.called"]
    assert {c["idempotency_key"] for c in http_calls} == {f"{run.id}:refund:-1", f"{run.id}:note:-1"}
    assert next(c for c in http_calls if c["path"] == "/refunds")["tries"] == 2, "the demo's 503 was retried"
    refund_call = next(c for c in http_calls if c["path"] == "/refunds")
    assert refund_call["guardrail"]["decision"] == "allowed" and refund_call["guardrail"]["path_rule"] == "/refunds"
    assert called["sql.called"]["guardrail"] == {"decision": "allowed", "read_only": True, "rules": [
        "workflow.connectors", "sql.bound_parameters", "sql.single_statement", "sql.read_only"]}


def test_a_large_refund_waits_for_a_lead_then_refunds(isolated_workers, demo: Demo) -> None:
    isolated_workers(concurrency=2, env=demo.env())
    run, _ = submit_run("refund-request", {"order_id": "A2", "message": "Please refund me, it arrived broken"})
    assert wait_for_run(run.id, timeout=60)["status"] == "waiting"
    [task] = [t for t in list_tasks("lee", ["leads"]) if t["run_id"] == run.id]

    decide(task["id"], "approve", "lee", ["leads"], input={"note": "broken on arrival"})
    view = wait_for_run(run.id, statuses=("succeeded", "failed"), timeout=60)

    assert view["status"] == "succeeded", view
    assert view["output"]["approval"] == "approve" and view["output"]["refund"]["amount"] == 250.0


def test_a_request_over_the_model_budget_parks_for_a_lead_instead_of_spending(isolated_workers, demo: Demo) -> None:
    isolated_workers(concurrency=2, env=demo.env())
    essay = "I want my money back. " * 1000  # ~5500 tokens, over the llm connector's 4000-token run budget
    run, _ = submit_run("refund-request", {"order_id": "A3", "message": essay})
    parked = wait_for_run(run.id, timeout=60)
    assert parked["status"] == "waiting", parked
    assert [s["status"] for s in parked["steps"]][:2] == ["succeeded", "waiting"]
    [task] = [t for t in list_tasks("lee", ["leads"]) if t["run_id"] == run.id]
    assert task["show"]["reason"] == "budget_exceeded"

    decide(task["id"], "approve", "lee", ["leads"], input={"category": "refund"})
    view = wait_for_run(run.id, statuses=("succeeded", "failed"), timeout=60)

    assert view["status"] == "succeeded", view
    assert view["output"]["category"] == "refund" and view["output"]["refund"]["amount"] == 19.99
    types = [e["type"] for e in events_of(run.id)]
    assert "budget.exceeded" in types and "llm.called" not in types
    exceeded = next(e["payload"] for e in events_of(run.id) if e["type"] == "budget.exceeded")
    assert exceeded["scope"] == "run" and exceeded["limit"] == 4000 and exceeded["needed"] > 4000
