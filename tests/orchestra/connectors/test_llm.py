"""The model connector: a loopback chat-completions server, the offline provider, schemas and budgets."""

from __future__ import annotations

import json

import pytest

from orchestra.connectors.budget import spent
from orchestra.errors import ConnectorError, InvalidAnswer
from orchestra.steps.base import Park
from orchestra.steps.kinds import get_kind
from tests.orchestra.connectors.conftest import audit_of
from tests.orchestra.connectors.servers import ChatCompletions

KEY = "sk-loopback-5b1e0c9d77"
SCHEMA = {"type": "object", "required": ["category"],
          "properties": {"category": {"enum": ["refund", "billing", "other"]}}}


def spec(on_invalid: str = "fail", workflow: str = "triage") -> dict:
    return {"name": workflow, "connectors": ["model"], "steps": [{
        "id": "classify", "uses": "llm:model", "on_invalid": on_invalid,
        "with": {"prompt": "Classify: I want my money back", "output_schema": SCHEMA}}]}


def use_loopback(connectors, chat: ChatCompletions, budget: str = "{}") -> None:  # type: ignore[no-untyped-def]
    connectors(f"""
connectors:
  model:
    kind: llm
    provider: openai
    base_url: {chat.url}/v1
    api_key_env: TEST_MODEL_KEY
    model: loopback-model
    max_tokens: 100
    max_invalid: 2
    budget: {budget}
""")


@pytest.fixture
def model(chat, connectors, monkeypatch) -> ChatCompletions:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TEST_MODEL_KEY", KEY)
    use_loopback(connectors, chat)
    return chat


def classify(make_call, on_invalid: str = "fail", **kwargs):  # type: ignore[no-untyped-def]
    call = make_call(spec(on_invalid, **kwargs), "classify")
    return call, get_kind("llm").execute(call)


def test_a_valid_answer_is_returned_with_tokens_model_and_latency(model, make_call):
    model.then(content='{"category": "refund"}', usage=(42, 7))

    call, output = classify(make_call)

    assert output["answer"] == {"category": "refund"}
    assert output["tokens"] == {"prompt": 42, "completion": 7, "total": 49}
    assert output["model"] == "loopback-model" and output["provider"] == "openai" and output["asks"] == 1
    sent = model.bodies[0]
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert "JSON Schema" in sent["body"]["messages"][0]["content"]
    called = [e for e in audit_of(call.run_id) if e["type"] == "llm.called"]
    assert called[0]["payload"]["tokens"]["total"] == 49 and called[0]["payload"]["model"] == "loopback-model"
    assert "latency_ms" in called[0]["payload"]
    assert KEY not in json.dumps(audit_of(call.run_id))


def test_an_invalid_answer_is_asked_again_with_the_problem_fed_back(model, make_call):
    model.then(content="I think it is a refund").then(content='```json\n{"category": "refund"}\n```')

    call, output = classify(make_call)

    assert output["answer"] == {"category": "refund"} and output["asks"] == 2
    assert output["tokens"]["total"] == 30
    feedback = model.bodies[1]["body"]["messages"][-1]["content"]
    assert "invalid" in feedback and "not JSON" in feedback
    assert [e["type"] for e in audit_of(call.run_id)].count("llm.invalid") == 1


def test_answers_that_keep_breaking_the_schema_fail_the_step_clearly(model, make_call):
    for _ in range(3):
        model.then(content='{"category": "weather"}')

    with pytest.raises(InvalidAnswer, match=r"gave 3 answers that break the step's output_schema.*category") as caught:
        classify(make_call)

    assert not caught.value.retryable
    assert "'weather' is not one of" in model.bodies[2]["body"]["messages"][-1]["content"]


def test_on_invalid_escalate_parks_for_a_person_with_the_schema_as_form(model, make_call):
    for _ in range(3):
        model.then(content="not json")

    with pytest.raises(Park) as caught:
        classify(make_call, on_invalid="escalate")

    assert caught.value.event == "human.requested"
    assert caught.value.audit["reason"] == "invalid_answer"


def test_a_model_server_that_fails_for_a_while_is_retried(model, make_call):
    model.then(status=503).then(content='{"category": "billing"}')

    _, output = classify(make_call)

    assert output["answer"] == {"category": "billing"}
    assert len(model.bodies) == 2


def test_a_refused_request_fails_without_retry(model, make_call):
    model.then(status=400)

    with pytest.raises(ConnectorError, match="answered 400") as caught:
        classify(make_call)

    assert not caught.value.retryable and len(model.bodies) == 1


def test_a_run_over_its_token_budget_parks_instead_of_spending(chat, connectors, monkeypatch, make_call):
    monkeypatch.setenv("TEST_MODEL_KEY", KEY)
    use_loopback(connectors, chat, budget="{per_run: 300}")
    chat.then(content='{"category": "refund"}', usage=(150, 50))
    first, _ = classify(make_call)
    call = make_call(spec(), "classify", run_id=first.run_id)

    with pytest.raises(Park) as caught:
        get_kind("llm").execute(call)

    assert caught.value.audit["reason"] == "budget_exceeded"
    assert len(chat.bodies) == 1
    assert spent("model", first.run_id, "triage")[0] == 200
    exceeded = [e for e in audit_of(first.run_id) if e["type"] == "budget.exceeded"]
    assert exceeded[0]["payload"]["scope"] == "run" and exceeded[0]["payload"]["used"] == 200


def test_the_workflow_budget_spans_runs(chat, connectors, monkeypatch, make_call):
    monkeypatch.setenv("TEST_MODEL_KEY", KEY)
    use_loopback(connectors, chat, budget="{per_workflow: 300}")
    chat.then(content='{"category": "refund"}', usage=(150, 50))
    classify(make_call, workflow="budgeted")

    with pytest.raises(Park):
        classify(make_call, workflow="budgeted")

    assert len(chat.bodies) == 1


def test_the_offline_provider_answers_from_keyword_rules_and_says_so(connectors, make_call):
    connectors("""
connectors:
  model:
    kind: llm
    provider: offline
    rules:
      - {when: [money back, refund], answer: {category: refund}}
    default: {category: other}
""")
    call, output = classify(make_call)
    _, again = classify(make_call)

    assert output["answer"] == {"category": "refund"} == again["answer"]
    assert output["provider"] == "offline" and output["model"] == "offline-rules"
    assert output["tokens"] == again["tokens"]
    called = [e for e in audit_of(call.run_id) if e["type"] == "llm.called"]
    assert called[0]["payload"]["provider"] == "offline"


def test_a_step_without_prompt_or_messages_is_told_what_to_give(model, make_call):
    call = make_call(spec(), "classify", {"output_schema": SCHEMA})

    with pytest.raises(ConnectorError, match="give exactly one of `prompt` or `messages`"):
        get_kind("llm").execute(call)
