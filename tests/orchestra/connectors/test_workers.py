"""Connectors on real worker processes: kill -9 mid-call, a shared rate limit, and no secret anywhere.

The workers load ``config/connectors.yaml``; its ``base_url_env`` variables point
the ``payments`` and ``crm`` connectors at the loopback payments service.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from orchestra import db
from orchestra.models import Base
from orchestra.runs import submit_run
from tests.support.harness import wait_for_run, wait_until

pytestmark = pytest.mark.slow

TOKEN = "pay-token-" + uuid.uuid4().hex
CRM_KEY = "crm-key-" + uuid.uuid4().hex


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def endpoints(url: str) -> dict[str, str]:
    return {"ORCHESTRA_PAYMENTS_URL": url, "ORCHESTRA_CRM_URL": url + "/crm"}


def test_kill_9_during_a_payments_call_refunds_exactly_once(isolated_workers, register, payments):
    payments.flaky, payments.hold_after_apply = 0, 4.0
    name = unique("refund-kill")
    register(f"""
name: {name}
connectors: [payments]
steps:
  - id: refund
    uses: http:payments
    with: {{method: POST, path: /refunds, json: {{order_id: A1, amount: 30}}}}
    retry: {{attempts: 3, backoff: 1s}}
""")
    doomed = isolated_workers(concurrency=1, env=endpoints(payments.url))
    run, _ = submit_run(name, {})
    wait_until(lambda: payments.applied == 1, timeout=30, what="the refund to be applied")
    doomed.kill9()
    payments.hold_after_apply = 0.0
    isolated_workers(concurrency=2, env=endpoints(payments.url))

    view = wait_for_run(run.id, statuses=("succeeded", "failed"), timeout=60)

    assert view["status"] == "succeeded", view
    assert payments.applied == 1
    sent_keys = {r["headers"]["Idempotency-Key"] for r in payments.requests}
    assert len(payments.requests) >= 2 and sent_keys == {f"{run.id}:refund:-1"}
    assert view["steps"][0]["output"]["json"]["refund_id"] == "rf-1"


def test_a_rate_limit_of_10_per_second_holds_across_two_worker_processes(isolated_workers, register, payments):
    payments.flaky = 0
    name, notes = unique("notes"), 40
    register(f"""
name: {name}
connectors: [crm]
input_schema: {{type: object}}
steps:
  - id: note_each
    uses: http:crm
    for_each: "input.contacts"
    max_parallel: {notes}
    with: {{method: POST, path: /notes, json: {{contact: "{{{{ item }}}}"}}}}
""")
    first = isolated_workers(concurrency=4, env=endpoints(payments.url))
    second = isolated_workers(concurrency=4, env=endpoints(payments.url))
    contacts = [f"c{i}" for i in range(notes)]
    run, _ = submit_run(name, {"contacts": contacts})

    view = wait_for_run(run.id, statuses=("succeeded", "failed"), timeout=120)

    assert view["status"] == "succeeded", view
    sent = sorted(((r["headers"]["Idempotency-Key"], r["body"]) for r in payments.requests), key=str)
    assert sent == sorted(((f"{run.id}:note_each:{i}", {"contact": c}) for i, c in enumerate(contacts)), key=str), \
        "each item sends its own contact, once, on whichever attempt gets through the limit"
    times = sorted(r["at"] for r in payments.requests)
    assert len(times) == notes
    rate, burst = 10.0, 10  # crm: rate_limit 10/s, a bucket of one second's worth
    for i, at in enumerate(times):
        assert at - times[0] >= (i + 1 - burst) / rate - 0.15, f"request {i} came {at - times[0]:.2f}s in"
    for worker in (first, second):
        assert "orchestra.step" in worker.log.read_text(errors="replace"), "both workers should take steps"


def everything_in_the_database() -> str:
    with db.read_session() as session:
        rows = [list(map(str, row)) for table in Base.metadata.sorted_tables
                for row in session.execute(sa.select(table))]
    return json.dumps(rows)


def everything_in_redis(client: Any) -> str:
    dump = []
    for key in client.scan_iter("*"):
        kind = client.type(key)
        value = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                 "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1)}.get(kind, lambda k: None)(key)
        dump.append(f"{key}={value}")
    return "\n".join(dump)


def test_no_secret_reaches_the_database_logs_or_redis(isolated_workers, register, payments, redis_client):
    payments.flaky = 0
    name = unique("secrets")
    register(f"""
name: {name}
connectors: [payments, crm]
steps:
  - id: refund
    uses: http:payments
    with: {{method: POST, path: /refunds, json: {{order_id: S1}}}}
  - id: note
    uses: http:crm
    with: {{method: POST, path: /notes, json: {{text: "refund {{{{ steps.refund.output.json.refund_id }}}}"}}}}
  - id: refused
    uses: http:payments
    with: {{method: DELETE, path: /refunds}}
""")
    worker = isolated_workers(concurrency=2, env={**endpoints(payments.url), "ORCHESTRA_PAYMENTS_TOKEN": TOKEN,
                                                  "ORCHESTRA_CRM_API_KEY": CRM_KEY})
    run, _ = submit_run(name, {})

    view = wait_for_run(run.id, statuses=("succeeded", "failed"), timeout=60)

    assert view["status"] == "failed" and "blocked by http.allow.methods" in view["error"]
    seen = {r["headers"].get("Authorization") or r["headers"].get("X-API-Key") for r in payments.requests}
    assert seen == {f"Bearer {TOKEN}", CRM_KEY}, "the secrets were sent"
    places = {"database": everything_in_the_database(), "worker log": worker.log.read_text(errors="replace"),
              "redis": everything_in_redis(redis_client)}
    assert "rf-1" in places["database"]
    for where, text in places.items():
        assert TOKEN not in text, f"the payments token leaked into the {where}"
        assert CRM_KEY not in text, f"the CRM key leaked into the {where}"


REFUND_FLOW = """
name: {name}
connectors: [orders, llm, payments]
input_schema: {{type: object, required: [order_id, message], properties: {{order_id: {{type: string}}, message: {{type: string}}}}}}
steps:
  - id: lookup
    uses: sql:orders
    with: {{query: "select id, amount from orders where id = :id", params: {{id: "{{{{ input.order_id }}}}"}}}}
  - id: decide
    uses: llm:llm
    with:
      prompt: "Classify this customer message: {{{{ input.message }}}}"
      output_schema: {{type: object, required: [category], properties: {{category: {{type: string}}}}}}
  - id: refund
    uses: http:payments
    if: "steps.decide.output.answer.category == 'refund'"
    with: {{method: POST, path: /refunds, json: {{order_id: "{{{{ input.order_id }}}}", amount: "{{{{ steps.lookup.output.rows[0].amount }}}}"}}}}
outputs: {{refund: "{{{{ steps.refund.output.json.refund_id }}}}", category: "{{{{ steps.decide.output.answer.category }}}}"}}
"""


@pytest.fixture
def business_db(stack: Any) -> None:
    from orchestra.settings import get_settings

    path = get_settings().var_dir / "business.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("create table if not exists orders (id text primary key, amount numeric)"))
        conn.execute(sa.text("insert or replace into orders values ('A1', 42.5)"))
    engine.dispose()


def test_a_refund_request_reads_the_order_classifies_and_refunds_end_to_end(isolated_workers, register, payments,
                                                                           business_db):
    payments.flaky = 0
    isolated_workers(concurrency=2, env=endpoints(payments.url))
    name = unique("refund-flow")
    register(REFUND_FLOW.format(name=name))
    run, _ = submit_run(name, {"order_id": "A1", "message": "I was charged twice, I want my money back"})

    view = wait_for_run(run.id, statuses=("succeeded", "failed"), timeout=60)

    assert view["status"] == "succeeded", view["error"]
    assert view["output"] == {"refund": "rf-1", "category": "refund"}
    assert payments.requests[0]["body"] == {"order_id": "A1", "amount": 42.5}
    with db.read_session() as session:
        from orchestra.audit import list_events

        events = {e.type: e.payload for e in list_events(session, run.id)}
    assert events["llm.called"]["provider"] == "offline" and events["llm.called"]["tokens"]["total"] > 0
    assert events["http.called"]["idempotency_key"] == f"{run.id}:refund:-1"


def test_a_model_step_over_its_run_budget_waits_for_a_person(isolated_workers, register, payments, business_db):
    isolated_workers(concurrency=2, env=endpoints(payments.url))
    name = unique("refund-budget")
    register(REFUND_FLOW.format(name=name))
    essay = "money back " * 2000  # ~5000 tokens, over the llm connector's 4000-token run budget

    run, _ = submit_run(name, {"order_id": "A1", "message": essay})
    view = wait_for_run(run.id, statuses=("waiting", "succeeded", "failed"), timeout=60)

    assert view["status"] == "waiting", view["error"]
    assert [s["status"] for s in view["steps"]] == ["succeeded", "waiting", "pending"]
    assert payments.requests == []
