"""The HTTP connector against a loopback payments service."""

from __future__ import annotations

import json

import pytest

from orchestra.errors import ConnectorError, ConnectorUnavailable, GuardrailBlocked
from orchestra.steps.kinds import get_kind
from tests.orchestra.connectors.conftest import audit_of
from tests.orchestra.connectors.servers import Payments

SECRET = "pay-secret-7f3a9c2e41"

SPEC = """
name: refunds
connectors: [payments]
steps:
  - id: refund
    uses: http:payments
    with: {method: POST, path: /refunds, json: {order_id: A1, amount: 30}}
"""


def config(url: str, **extra: str) -> str:
    return f"""
connectors:
  payments:
    kind: http
    base_url: {url}/api
    auth: {{type: bearer, token_env: TEST_PAYMENTS_TOKEN}}
    allow:
      methods: [GET, POST]
      paths: ["/refunds", "/refunds/*", "/busy", "/storm", "/invalid", "/echo", "/text", "/down"]
    retry: {{attempts: {extra.get('attempts', 4)}, backoff: 10ms, max_wait: 5s}}
    timeout: 5s
"""


@pytest.fixture
def payments_api(payments: Payments, connectors, monkeypatch) -> Payments:
    """The payments service behind /api, so the base URL has a path to stay under."""
    monkeypatch.setenv("TEST_PAYMENTS_TOKEN", SECRET)
    original = payments.answer

    def under_api(method, path, headers, body):  # type: ignore[no-untyped-def]
        if not path.startswith("/api/"):
            return 404, {}, {"error": "outside /api"}
        return original(method, path.removeprefix("/api"), headers, body)

    payments.answer = under_api  # type: ignore[method-assign]
    connectors(config(payments.url))
    return payments


def run_step(make_call, params=None, spec=SPEC):  # type: ignore[no-untyped-def]
    call = make_call(spec, "refund", params)
    return call, get_kind("http").execute(call)


def test_refund_survives_two_503s_and_carries_one_idempotency_key(payments_api, make_call):
    call, output = run_step(make_call)

    assert output["status"] == 201
    assert output["json"]["request"] == {"order_id": "A1", "amount": 30}
    keys_sent = [r["headers"]["Idempotency-Key"] for r in payments_api.requests]
    assert keys_sent == [call.idempotency_key] * 3
    assert payments_api.applied == 1
    called = [e for e in audit_of(call.run_id) if e["type"] == "http.called"]
    assert called[0]["payload"]["status"] == 201
    assert called[0]["payload"]["tries"] == 3
    assert called[0]["payload"]["idempotency_key"] == call.idempotency_key


def test_redelivered_step_does_not_refund_twice(payments_api, make_call):
    call = make_call(SPEC, "refund")
    first = get_kind("http").execute(call)
    again = get_kind("http").execute(call)

    assert first["json"]["refund_id"] == again["json"]["refund_id"]
    assert payments_api.applied == 1


def test_429_waits_for_retry_after_then_succeeds(payments_api, make_call):
    _, output = run_step(make_call, {"method": "POST", "path": "/busy"})

    assert output["status"] == 201
    first, second = payments_api.requests
    assert second["at"] - first["at"] >= 0.9


def test_a_long_retry_after_is_handed_to_the_runtime_instead_of_sleeping(payments_api, make_call):
    with pytest.raises(ConnectorUnavailable) as caught:
        run_step(make_call, {"method": "POST", "path": "/storm"})

    assert caught.value.retryable
    assert caught.value.retry_after == 30
    assert len(payments_api.requests) == 1


def test_a_system_that_stays_down_fails_retryably_after_the_connector_retries(payments_api, make_call):
    with pytest.raises(ConnectorUnavailable) as caught:
        run_step(make_call, {"method": "POST", "path": "/down"})

    assert caught.value.retryable
    assert "after 4 tries" in caught.value.message
    assert len(payments_api.requests) == 4


def test_other_4xx_fail_at_once_with_the_body_in_the_error(payments_api, make_call):
    with pytest.raises(ConnectorError) as caught:
        run_step(make_call, {"method": "POST", "path": "/invalid"})

    assert not caught.value.retryable
    assert "422" in caught.value.message and "amount must be positive" in caught.value.message
    assert len(payments_api.requests) == 1


def test_unreachable_system_is_retried_then_fails_retryably(connectors, make_call, monkeypatch):
    monkeypatch.setenv("TEST_PAYMENTS_TOKEN", SECRET)
    connectors(config("http://127.0.0.1:9", attempts="2"))

    with pytest.raises(ConnectorUnavailable) as caught:
        run_step(make_call)

    assert caught.value.retryable and "ConnectError" in caught.value.message


@pytest.mark.parametrize(("params", "rule"), [
    ({"method": "DELETE", "path": "/refunds"}, "http.allow.methods"),
    ({"method": "POST", "path": "/admin"}, "http.allow.paths"),
    ({"method": "GET", "path": "/refunds/../../admin"}, "http.base_url"),
    ({"method": "GET", "path": "//evil.example.com/refunds"}, "http.base_url"),
    ({"method": "GET", "path": "@evil.example.com/refunds"}, "http.base_url"),
    ({"method": "GET", "path": "/refunds/%2e%2e/admin"}, "http.base_url"),
    ({"method": "POST", "path": "/refunds", "headers": {"Authorization": "Bearer mine"}}, "http.headers"),
])
def test_calls_off_the_allow_list_are_blocked_audited_and_never_sent(payments_api, make_call, params, rule):
    call = make_call(SPEC, "refund", params)
    with pytest.raises(GuardrailBlocked) as caught:
        get_kind("http").execute(call)

    assert caught.value.rule == rule
    assert not caught.value.retryable
    assert payments_api.requests == []
    blocked = [e for e in audit_of(call.run_id) if e["type"] == "guardrail.blocked"]
    assert blocked and blocked[0]["payload"]["rule"] == rule


def test_a_connector_missing_from_the_workflow_is_blocked_at_run_time(payments_api, make_call):
    call = make_call(SPEC, "refund")
    narrowed = call.spec.model_copy(update={"connectors": []})
    call = type(call)(**{**call.__dict__, "spec": narrowed})

    with pytest.raises(GuardrailBlocked) as caught:
        get_kind("http").execute(call)

    assert caught.value.rule == "workflow.connectors"
    assert payments_api.requests == []


def test_unknown_connector_error_names_it_and_the_fix(connectors, make_call):
    connectors("connectors: {}")
    with pytest.raises(ConnectorError, match=r"unknown connector 'payments'; declare it in config/connectors.yaml"):
        run_step(make_call)


def test_bad_with_field_is_named(payments_api, make_call):
    with pytest.raises(ConnectorError, match=r"bad `with` for http:payments: bdy"):
        run_step(make_call, {"method": "POST", "path": "/refunds", "bdy": {}})


def test_bearer_secret_is_sent_but_never_recorded(payments_api, make_call):
    call, output = run_step(make_call, {"method": "GET", "path": "/echo"})

    assert payments_api.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in json.dumps(output)
    assert SECRET not in json.dumps(audit_of(call.run_id))


def test_missing_secret_env_fails_naming_the_variable(payments_api, make_call, monkeypatch):
    monkeypatch.delenv("TEST_PAYMENTS_TOKEN")
    with pytest.raises(ConnectorError, match=r"\$TEST_PAYMENTS_TOKEN, which is not set; export TEST_PAYMENTS_TOKEN"):
        run_step(make_call)


def test_text_answers_come_back_as_text(payments_api, make_call):
    _, output = run_step(make_call, {"method": "GET", "path": "/text"})

    assert output["text"] == "plain words" and "json" not in output
