"""Signals on real workers: resume a parked step, keep an early signal, refuse bad ones."""

from __future__ import annotations

import pytest

from orchestra.errors import Conflict, InputError
from orchestra.runs import submit_run
from orchestra.signals import deliver_signal
from tests.orchestra.waitkit import audit_of, event_types, unique
from tests.support.harness import wait_for_run, wait_until

SPEC = """
name: {name}
steps:
  - {{id: first, uses: "task:tests.support.steps.slow", with: {{key: {name}, seconds: {seconds}}}}}
  - id: paid
    uses: signal
    with:
      name: payment
      schema: {{type: object, required: [amount], properties: {{amount: {{type: number}}}}}}
{extra}
  - {{id: after, uses: "task:tests.support.steps.add", with: {{a: "{{{{ steps.paid.output.amount }}}}", b: 1}}}}
"""


def _parked(run_id: str) -> bool:
    view = wait_for_run(run_id)
    return {s["id"]: s["status"] for s in view["steps"]}["paid"] == "waiting"


def test_a_signal_resumes_the_parked_step_with_its_payload(workers, register):
    name = unique("signal")
    register(SPEC.format(name=name, seconds=0, extra=""))
    run, _ = submit_run(name, {})
    wait_until(lambda: _parked(run.id), what="the signal step to park")

    result = deliver_signal(run.id, "payment", {"amount": 41}, actor="payments-webhook")

    assert result["status"] == "delivered"
    view = wait_for_run(run.id, ("succeeded", "failed"))
    assert view["status"] == "succeeded"
    assert {s["id"]: s["output"] for s in view["steps"]}["after"] == 42
    events, verified = audit_of(run.id)
    assert verified
    received = next(e for e in events if e.type == "signal.received")
    assert received.actor == "payments-webhook" and received.payload["payload"] == {"amount": 41}


def test_a_signal_that_arrives_before_its_step_parks_is_kept_not_lost(workers, register):
    name = unique("early")
    register(SPEC.format(name=name, seconds=1.0, extra=""))
    run, _ = submit_run(name, {})
    wait_until(lambda: wait_for_run(run.id, ("running", "waiting", "succeeded", "failed"))["status"] == "running",
               what="the run to start")

    result = deliver_signal(run.id, "payment", {"amount": 1})

    assert result["status"] == "buffered"
    view = wait_for_run(run.id, ("succeeded", "failed"))
    assert view["status"] == "succeeded"
    assert {s["id"]: s["output"] for s in view["steps"]}["paid"] == {"amount": 1}
    assert "signal.consumed:paid" in event_types(run.id)


def test_bad_signals_are_refused_and_the_wait_survives(workers, register):
    name = unique("badsignal")
    register(SPEC.format(name=name, seconds=0, extra=""))
    run, _ = submit_run(name, {})
    wait_until(lambda: _parked(run.id), what="the signal step to park")
    with pytest.raises(InputError) as wrong_type:
        deliver_signal(run.id, "payment", {"amount": "ten"})
    assert wrong_type.value.errors[0]["loc"] == ["payload", "amount"]
    with pytest.raises(InputError, match="no signal step named 'refund'") as unknown:
        deliver_signal(run.id, "refund", {})
    assert "payment" in unknown.value.errors[0]["msg"]
    assert _parked(run.id)

    deliver_signal(run.id, "payment", {"amount": 2})
    assert wait_for_run(run.id, ("succeeded", "failed"))["status"] == "succeeded"
    with pytest.raises(Conflict, match="already ended as succeeded"):
        deliver_signal(run.id, "payment", {"amount": 3})


def test_a_signal_that_never_comes_times_out_and_fails_the_step(workers, register):
    name = unique("sigtimeout")
    register(SPEC.format(name=name, seconds=0, extra="      timeout: 1s"))
    run, _ = submit_run(name, {})
    view = wait_for_run(run.id, ("succeeded", "failed"), timeout=15)
    assert view["status"] == "failed"
    assert "no signal 'payment' arrived before its timeout" in view["error"]
