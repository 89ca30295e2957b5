"""The agent step: a loopback model's tool calls, checked by policy and run through the connectors."""

from __future__ import annotations

import pytest

from orchestra import db
from orchestra.errors import GuardrailBlocked
from orchestra.models import HumanTask
from orchestra.steps.base import Park
from orchestra.steps.kinds import get_kind
from orchestra.steps.human import payload_digest
from tests.orchestra.connectors.conftest import audit_of

REFUND_TOOL = {"name": "refund", "uses": "http:payments", "with": {"method": "POST", "path": "/refunds"},
               "parameters": {"type": "object", "required": ["order_id", "amount"],
                              "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}}},
               "constraints": ["args.amount <= 100"]}


@pytest.fixture
def agent_world(chat, payments, connectors):  # type: ignore[no-untyped-def]
    payments.flaky = 0
    connectors(f"""
connectors:
  model: {{kind: llm, provider: openai, base_url: "{chat.url}/v1", model: loopback-model}}
  payments:
    kind: http
    base_url: {payments.url}
    allow: {{methods: [POST], paths: ["/refunds"]}}
""")
    return chat, payments


def agent_call(make_call, tools=None, connectors=("model", "payments"), max_iterations=3):  # type: ignore[no-untyped-def]
    spec = {"name": "agentic", "connectors": list(connectors), "steps": [{
        "id": "act", "uses": "agent:model",
        "with": {"prompt": "Refund order A1", "tools": tools or [REFUND_TOOL], "max_iterations": max_iterations}}]}
    return make_call(spec, "act")


def test_the_model_calls_a_listed_tool_through_its_connector_and_then_answers(agent_world, make_call):
    chat, payments = agent_world
    chat.then(tool_calls=[{"name": "refund", "arguments": {"order_id": "A1", "amount": 30}}], usage=(20, 10))
    chat.then(content="Refunded A1.", usage=(40, 5))
    call = agent_call(make_call)

    output = get_kind("agent").execute(call)

    assert output["answer"] == "Refunded A1." and output["iterations"] == 2
    assert output["tool_calls"] == [{"tool": "refund", "arguments": {"order_id": "A1", "amount": 30}, "status": 201}]
    assert output["tokens"]["total"] == 75
    assert payments.requests[0]["body"] == {"order_id": "A1", "amount": 30}
    assert payments.requests[0]["headers"]["Idempotency-Key"] == f"{call.run_id}:act:-1:1.0"
    assert chat.bodies[0]["body"]["tools"][0]["function"]["name"] == "refund"
    assert chat.bodies[1]["body"]["messages"][-1]["role"] == "tool"
    types = [e["type"] for e in audit_of(call.run_id)]
    assert types == ["llm.called", "http.called", "agent.tool_called", "llm.called"]


@pytest.mark.parametrize(("wanted", "rule"), [
    ({"name": "delete_everything", "arguments": {}}, "agent.tools"),
    ({"name": "refund", "arguments": {"order_id": "A1", "amount": 5000}}, "agent.constraints"),
    ({"name": "refund", "arguments": {"order_id": 7}}, "agent.parameters"),
])
def test_tool_calls_outside_the_policy_are_blocked_and_never_run(agent_world, make_call, wanted, rule):
    chat, payments = agent_world
    chat.then(tool_calls=[wanted])
    call = agent_call(make_call)

    with pytest.raises(GuardrailBlocked) as caught:
        get_kind("agent").execute(call)

    assert caught.value.rule == rule
    assert payments.requests == []
    blocked = [e for e in audit_of(call.run_id) if e["type"] == "guardrail.blocked"]
    assert blocked[0]["payload"]["rule"] == rule and blocked[0]["payload"]["tool"] == wanted["name"]


def test_a_tool_on_a_connector_the_workflow_does_not_list_is_blocked(agent_world, make_call):
    chat, payments = agent_world
    chat.then(tool_calls=[{"name": "refund", "arguments": {"order_id": "A1", "amount": 30}}])

    with pytest.raises(GuardrailBlocked) as caught:
        get_kind("agent").execute(agent_call(make_call, connectors=("model",)))

    assert caught.value.rule == "workflow.connectors" and payments.requests == []


def test_a_tool_requiring_approval_parks_with_the_exact_arguments(agent_world, make_call):
    chat, payments = agent_world
    chat.then(tool_calls=[{"name": "refund", "arguments": {"order_id": "A1", "amount": 30}}])

    with pytest.raises(Park) as caught:
        get_kind("agent").execute(agent_call(make_call, tools=[{**REFUND_TOOL, "requires_approval": True}]))

    assert caught.value.audit["reason"] == "tool_approval"
    with db.read_session() as session:
        task = session.get(HumanTask, caught.value.audit["task_id"])
    assert task is not None and task.status == "open"
    assert task.shown["show"]["tool"] == "refund"
    assert task.shown["show"]["arguments"] == {"order_id": "A1", "amount": 30}  # exactly what the model asked for
    assert caught.value.audit["payload_hash"] == task.payload_hash == payload_digest(task.shown)  # the decision binds to them
    assert payments.requests == []


def test_an_agent_that_never_finishes_stops_at_max_iterations(agent_world, make_call):
    chat, payments = agent_world
    for n in range(2):
        chat.then(tool_calls=[{"name": "refund", "arguments": {"order_id": f"A{n}", "amount": 1}}])

    with pytest.raises(GuardrailBlocked) as caught:
        get_kind("agent").execute(agent_call(make_call, max_iterations=2))

    assert caught.value.rule == "agent.max_iterations"
    assert len(payments.requests) == 2
