"""The step runtime on real worker processes: order, joins, fan-out, retries, redelivery."""

from __future__ import annotations

import uuid

from orchestra import db
from orchestra.audit import list_events, verify_chain
from orchestra.broker import celery_app
from orchestra.compiler import step_signature
from orchestra.models import Run
from orchestra.runs import submit_run
from orchestra.workflows import get_workflow
from tests.support.harness import wait_for_run, wait_until


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def events_of(run_id: str) -> list[str]:
    with db.read_session() as session:
        return [e.type + (f":{e.step_id}" if e.step_id else "") for e in list_events(session, run_id)]


def test_linear_run_passes_outputs_down_the_chain_and_audits_every_step(workers, register):
    name = unique("linear")
    register(f"""
name: {name}
input_schema: {{type: object, required: [a], properties: {{a: {{type: number}}}}}}
steps:
  - {{id: one, uses: "task:tests.support.steps.add", with: {{a: "{{{{ input.a }}}}", b: 1}}}}
  - {{id: two, uses: "task:tests.support.steps.add", with: {{a: "{{{{ steps.one.output }}}}", b: 10}}}}
  - {{id: three, uses: "task:tests.support.steps.add", with: {{a: "{{{{ steps.two.output }}}}", b: 100}}}}
outputs: {{total: "{{{{ steps.three.output }}}}"}}
""")
    run, _ = submit_run(name, {"a": 1})
    view = wait_for_run(run.id)
    assert view["status"] == "succeeded"
    assert view["output"] == {"total": 112}
    assert [s["output"] for s in view["steps"]] == [2, 12, 112]
    assert events_of(run.id) == [
        "run.submitted", "run.started",
        "step.started:one", "step.succeeded:one",
        "step.started:two", "step.succeeded:two",
        "step.started:three", "step.succeeded:three",
        "run.succeeded",
    ]


def test_parallel_branches_join_only_after_both_finish(workers, register, redis_client):
    name, key = unique("dag"), unique("dag")
    register(f"""
name: {name}
steps:
  - {{id: start, uses: "task:tests.support.steps.count", with: {{key: {key}:start, value: 1}}}}
  - {{id: left, uses: "task:tests.support.steps.slow", needs: [start], with: {{key: {key}:left, seconds: 0.5}}}}
  - {{id: right, uses: "task:tests.support.steps.add", needs: [start], with: {{a: 2, b: 3}}}}
  - id: join
    uses: "task:tests.support.steps.add"
    needs: [left, right]
    with: {{a: "{{{{ steps.left.output }}}}", b: "{{{{ steps.right.output }}}}"}}
""")
    run, _ = submit_run(name, {})
    view = wait_for_run(run.id)
    assert view["status"] == "succeeded"
    steps = {s["id"]: s for s in view["steps"]}
    assert steps["join"]["output"] == 5.5
    assert steps["join"]["started_at"] >= max(steps["left"]["finished_at"], steps["right"]["finished_at"])
    assert redis_client.get(f"{key}:left:done") == "1"


def test_for_each_of_50_items_respects_max_parallel_and_keeps_item_order(isolated_workers, register, redis_client):
    isolated_workers(concurrency=4)  # twice the slots max_parallel allows, so only max_parallel can hold it at 2
    name, key = unique("fanout"), unique("fanout")
    register(f"""
name: {name}
steps:
  - id: each
    uses: "task:tests.support.steps.probe"
    for_each: "input.items"
    max_parallel: 2
    with: {{key: {key}, seconds: 0.1, item: "{{{{ item }}}}"}}
  - {{id: after, uses: "task:tests.support.steps.count", with: {{key: {key}:after, value: "{{{{ steps.each.output | length }}}}"}}}}
""")
    items = [f"i{n}" for n in range(50)]
    run, _ = submit_run(name, {"items": items})
    view = wait_for_run(run.id, timeout=120)
    assert view["status"] == "succeeded"
    parent = next(s for s in view["steps"] if s["id"] == "each" and s["item"] is None)
    assert parent["output"] == items
    assert int(redis_client.get(f"{key}:total")) == 50
    assert int(redis_client.get(f"{key}:max")) == 2
    assert next(s for s in view["steps"] if s["id"] == "after")["output"] == 50


def test_max_parallel_limits_concurrency_below_worker_capacity(isolated_workers, register, redis_client):
    isolated_workers(concurrency=4)
    name, key = unique("mp"), unique("mp")
    register(f"""
name: {name}
steps:
  - {{id: each, uses: "task:tests.support.steps.probe", for_each: "input.items", max_parallel: 2,
     with: {{key: {key}, seconds: 0.3, item: "{{{{ item }}}}"}}}}
""")
    run, _ = submit_run(name, {"items": list(range(8))})
    assert wait_for_run(run.id, timeout=60)["status"] == "succeeded"
    assert int(redis_client.get(f"{key}:max")) == 2


def test_a_step_that_fails_twice_succeeds_on_its_third_attempt(workers, register):
    name, key = unique("flaky"), unique("flaky")
    register(f"""
name: {name}
steps:
  - id: shaky
    uses: "task:tests.support.steps.flaky"
    with: {{key: {key}, fail_times: 2}}
    retry: {{attempts: 3, backoff: 100ms, max_backoff: 1s}}
""")
    run, _ = submit_run(name, {})
    view = wait_for_run(run.id)
    assert view["status"] == "succeeded"
    assert view["steps"][0]["attempts"] == 3
    assert view["steps"][0]["output"] == {"attempt": 3}
    assert events_of(run.id).count("step.retrying:shaky") == 2


def test_a_step_that_exhausts_its_retries_fails_the_run_with_the_error(workers, register):
    name, key = unique("broken"), unique("broken")
    register(f"""
name: {name}
steps:
  - {{id: doomed, uses: "task:tests.support.steps.flaky", with: {{key: {key}, fail_times: 99}},
     retry: {{attempts: 2, backoff: 50ms}}}}
  - {{id: never, uses: "task:tests.support.steps.count", with: {{key: {key}:never}}}}
""")
    run, _ = submit_run(name, {})
    view = wait_for_run(run.id)
    assert view["status"] == "failed"
    assert "flaky failure number 2" in view["error"]
    doomed, never = view["steps"]
    assert (doomed["status"], doomed["attempts"]) == ("failed", 2)
    assert never["status"] == "pending"
    assert events_of(run.id)[-2:] == ["step.failed:doomed", "run.failed"]


def test_a_false_condition_skips_the_step_and_later_steps_still_run(workers, register):
    name = unique("cond")
    register(f"""
name: {name}
steps:
  - {{id: amount, uses: "task:tests.support.steps.add", with: {{a: "{{{{ input.amount }}}}", b: 0}}}}
  - {{id: big, uses: "task:tests.support.steps.add", if: "steps.amount.output > 100", with: {{a: 1, b: 1}}}}
  - {{id: last, uses: "task:tests.support.steps.add", with: {{a: 0, b: 0}}}}
""")
    run, _ = submit_run(name, {"amount": 5})
    view = wait_for_run(run.id)
    assert [s["status"] for s in view["steps"]] == ["succeeded", "skipped", "succeeded"]
    assert "step.skipped:big" in events_of(run.id)


def test_a_redelivered_message_never_executes_a_succeeded_step_again(workers, register, redis_client):
    name, key = unique("once"), unique("once")
    register(f"""
name: {name}
steps:
  - {{id: effect, uses: "task:tests.support.steps.count", with: {{key: {key}}}}}
  - {{id: hold, uses: "task:tests.support.steps.gate", with: {{key: {key}:gate}}}}
""")
    run, _ = submit_run(name, {})
    wait_until(lambda: redis_client.get(f"{key}:gate:waiting") == "1", what="the run to reach its gate")
    assert redis_client.get(key) == "1"
    spec = get_workflow(name)
    duplicates = [step_signature(spec, run.id, "effect", app=celery_app()).apply_async() for _ in range(3)]
    for duplicate in duplicates:  # each is consumed by the worker's free slot while the run is still running
        duplicate.get(timeout=30)
    with db.read_session() as session:
        still = session.get(Run, run.id)
        assert still is not None and still.status == "running"
    redis_client.set(f"{key}:gate:open", 1)
    view = wait_for_run(run.id)
    assert view["status"] == "succeeded"
    assert redis_client.get(key) == "1"
    assert view["steps"][0]["attempts"] == 1
    assert events_of(run.id).count("step.started:effect") == 1
    with db.read_session() as session:
        assert verify_chain(list_events(session, run.id)).verified


def test_a_template_error_fails_the_step_without_retrying(workers, register):
    name = unique("tplerr")
    register(f"""
name: {name}
steps:
  - {{id: bad, uses: "task:tests.support.steps.add", with: {{a: "{{{{ input.missing.deeper }}}}", b: 1}},
     retry: {{attempts: 5}}}}
""")
    run, _ = submit_run(name, {})
    view = wait_for_run(run.id)
    assert view["status"] == "failed"
    assert "input.missing.deeper" in view["error"]


def test_a_run_longer_than_one_segment_continues_from_the_database(workers, register):
    name = unique("segments")
    steps = "\n".join(
        f"  - {{id: s{i}, uses: 'task:tests.support.steps.add', with: {{a: \"{{{{ steps.s{i - 1}.output }}}}\", b: 1}}}}"
        if i else "  - {id: s0, uses: 'task:tests.support.steps.add', with: {a: 0, b: 1}}"
        for i in range(40)
    )
    register(f"name: {name}\nsteps:\n{steps}\noutputs: {{last: '{{{{ steps.s39.output }}}}'}}\n")
    run, _ = submit_run(name, {})
    view = wait_for_run(run.id, timeout=120)
    assert view["status"] == "succeeded"
    assert view["output"] == {"last": 40}
    assert all(s["attempts"] == 1 for s in view["steps"])


def test_a_for_each_over_the_item_limit_fails_the_step_with_the_fix(workers, register):
    name = unique("toomany")
    register(f"""
name: {name}
steps:
  - {{id: each, uses: "task:tests.support.steps.noop", for_each: "input.items"}}
""")
    run, _ = submit_run(name, {"items": list(range(5001))})
    view = wait_for_run(run.id)
    assert view["status"] == "failed"
    assert "5001 items, over the limit of 5000" in view["error"] and "ORCHESTRA_MAX_FOR_EACH_ITEMS" in view["error"]
    assert [s for s in view["steps"] if s["item"] is not None] == []  # no item rows were written


def test_an_output_that_is_not_json_fails_the_step_at_once_with_the_reason(workers, register):
    for kind, reason in (("nan", "Out of range float values are not JSON compliant"), ("set", "not JSON serializable"),
                         ("surrogate", "surrogates not allowed")):
        name = unique(f"notjson-{kind}")
        register(f"""
name: {name}
steps:
  - {{id: give, uses: "task:tests.support.steps.returns", with: {{kind: {kind}}}, retry: {{attempts: 3, backoff: 1s}}}}
""")
        run, _ = submit_run(name, {})
        view = wait_for_run(run.id)
        assert view["status"] == "failed", view
        step = view["steps"][0]
        assert step["attempts"] == 1, "a step whose output can never be stored is not retried"
        assert "is not JSON" in step["error"] and reason in step["error"], step["error"]


def test_the_last_step_ends_the_run_in_the_transaction_that_records_its_output(register):
    from orchestra import transitions
    from orchestra.runs import get_run
    from orchestra.transitions import Outcome

    name = unique("last")
    register(f"""
name: {name}
steps:
  - {{id: one, uses: "task:tests.support.steps.add", with: {{a: 1, b: 2}}}}
  - {{id: two, uses: "task:tests.support.steps.add", with: {{a: "{{{{ steps.one.output }}}}", b: 4}}}}
outputs: {{total: "{{{{ steps.two.output }}}}"}}
""")
    run, _ = submit_run(name, {}, dispatch=False)
    for step_id, output, last in (("one", 3, False), ("two", 7, True)):
        claim = transitions.claim(run.id, step_id, -1)
        assert claim.outcome == Outcome.RUN
        assert transitions.succeed(claim, output, [], finish_run=last)
    view = get_run(run.id)
    assert (view.status, view.output) == ("succeeded", {"total": 7})  # no worker, sweeper or finish message needed
    assert events_of(run.id)[-2:] == ["step.succeeded:two", "run.succeeded"]
