"""The compiler: canvases carry ids only and stay small however long the workflow is."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from kombu.utils.json import dumps

from orchestra.compiler import compile_run, layers, plan
from orchestra.runs import submit_run
from orchestra.spec import load_spec
from tests.support.harness import wait_for_run


def linear(n: int):
    steps = "\n".join(f"  - {{id: s{i}, uses: 'task:examples.noop'}}" for i in range(n))
    return load_spec(f"name: long\nsteps:\n{steps}\n")


def dag(steps: str, name: str = "dag"):
    return load_spec(f"name: {name}\nsteps:\n{steps}")


TWO_BRANCHES = """\
  - {id: a, uses: "task:examples.noop", needs: []}
  - {id: b, uses: "task:examples.noop", needs: []}
  - {id: c, uses: "task:examples.noop", needs: [a]}
  - {id: d, uses: "task:examples.noop", needs: [b]}
  - {id: e, uses: "task:examples.noop", needs: [c, d]}
"""


def shape(sig) -> list[Any]:
    """The canvas as a flat series: a step id for a lone step, a list of lanes (lists of step ids) for a group."""
    if sig.task == "celery.chain":
        return [part for task in sig.tasks for part in shape(task)]
    if sig.task == "celery.chord":
        return [lanes(sig.tasks), *shape(sig.body)]
    if sig.task == "celery.group":
        return [lanes(sig.tasks)]
    return [sig.args[1] if sig.task == "orchestra.step" else sig.task]


def lanes(members) -> list[list[str]]:
    return [[t.args[1] for t in (m.tasks if m.task == "celery.chain" else [m])] for m in members]


def first_message_bytes(sig) -> int:
    """The size of the first task message the canvas would send: its args plus the chain it carries."""
    from celery import chain

    tasks = sig.tasks if isinstance(sig, chain) else [sig]
    first, rest = tasks[0], list(reversed(tasks[1:]))
    body = [list(first.args), {}, {"chain": [dict(t) for t in rest], "callbacks": None, "errbacks": None, "chord": None}]
    return len(dumps(body))


def test_a_200_step_linear_workflow_compiles_to_messages_under_8_kb():
    spec = linear(200)
    sig = compile_run(spec, "01900000-0000-7000-8000-000000000000", {})
    size = first_message_bytes(sig)
    assert size <= 8 * 1024, size
    names = [t.task for t in sig.tasks]
    assert names[-1] == "orchestra.advance"


def test_messages_carry_ids_never_outputs():
    spec = linear(3)
    sig = compile_run(spec, "run-1", {"s0": "succeeded"})
    args = [list(t.args) for t in sig.tasks]
    assert args == [["run-1", "s1", -1], ["run-1", "s2", -1]]
    assert sig.tasks[-1].kwargs == {"finish": True}  # the last step ends the run itself
    assert "output" not in json.dumps([dict(t) for t in sig.tasks])


def test_independent_branches_share_a_layer_and_joins_follow():
    spec = load_spec("""
name: dag
steps:
  - {id: a, uses: "task:x.y"}
  - {id: b, uses: "task:x.y", needs: [a]}
  - {id: c, uses: "task:x.y", needs: [a]}
  - {id: d, uses: "task:x.y", needs: [b, c]}
""")
    assert layers(spec, spec.order) == [["a"], ["b", "c"], ["d"]]
    assert layers(spec, ["c", "d"]) == [["c"], ["d"]]


def test_ended_steps_are_not_compiled_again():
    spec = linear(4)
    sig = compile_run(spec, "r", {"s0": "succeeded", "s1": "skipped", "s2": "succeeded"})
    assert sig.args[1] == "s3" and sig.kwargs == {"finish": True}


def test_flower_sees_workflow_and_step_in_the_task_name():
    spec = linear(2)
    sig = compile_run(spec, "r", {})
    assert sig.tasks[0].options["shadow"] == "long.s0"


def test_the_real_first_message_of_a_200_step_run_is_under_8_kb(redis_client):
    spec = linear(200)
    from orchestra.broker import celery_app

    sig = compile_run(spec, "01900000-0000-7000-8000-000000000000", {}, app=celery_app())
    sig.tasks[0].set(queue="size-probe")
    redis_client.delete("size-probe")
    sig.apply_async()
    messages = redis_client.lrange("size-probe", 0, -1)
    redis_client.delete("size-probe")
    assert len(messages) == 1
    assert len(messages[0].encode()) <= 8 * 1024, len(messages[0])


def test_only_a_plain_chain_is_sent_compiled_at_submission():
    from orchestra.compiler import is_plain_chain

    run_id = "01900000-0000-7000-8000-000000000000"
    assert is_plain_chain(compile_run(linear(1), run_id, {}))
    assert is_plain_chain(compile_run(linear(40), run_id, {}))  # segments end in an advance
    fork = load_spec("name: fork\nsteps:\n  - {id: a, uses: 'task:examples.noop'}\n"
                     "  - {id: b, uses: 'task:examples.noop', needs: [a]}\n"
                     "  - {id: c, uses: 'task:examples.noop', needs: [a]}\n")
    forked = compile_run(fork, run_id, {})  # one step, then a group: freezing the group would subscribe
    assert forked.tasks[0].task == "orchestra.step" and not is_plain_chain(forked)


def test_a_branch_waits_only_for_its_own_needs():
    sig = compile_run(dag(TWO_BRANCHES), "r", {})
    assert shape(sig) == [[["a", "c"], ["b", "d"]], "e"]  # c follows a alone, never b
    assert sig.body.kwargs == {"finish": True}


def test_a_diamond_is_a_step_a_group_and_the_join():
    spec = dag("""\
  - {id: a, uses: "task:x.y"}
  - {id: b, uses: "task:x.y", needs: [a]}
  - {id: c, uses: "task:x.y", needs: [a]}
  - {id: d, uses: "task:x.y", needs: [b, c]}
""")
    assert shape(compile_run(spec, "r", {})) == ["a", [["b"], ["c"]], "d"]


def test_a_graph_that_is_not_series_parallel_is_compiled_by_layers():
    spec = dag("""\
  - {id: a, uses: "task:x.y", needs: []}
  - {id: b, uses: "task:x.y", needs: []}
  - {id: c, uses: "task:x.y", needs: [a]}
  - {id: d, uses: "task:x.y", needs: [a, b]}
""")  # the N shape: c needs a, d needs a and b
    assert shape(compile_run(spec, "r", {})) == [[["a"], ["b"]], [["c"], ["d"]], "orchestra.finish"]


def test_a_lane_that_would_hold_a_group_sends_the_whole_block_by_layers():
    spec = dag("""\
  - {id: a, uses: "task:x.y", needs: []}
  - {id: b, uses: "task:x.y", needs: [a]}
  - {id: c, uses: "task:x.y", needs: [a]}
  - {id: d, uses: "task:x.y", needs: [b, c]}
  - {id: x, uses: "task:x.y", needs: []}
  - {id: y, uses: "task:x.y", needs: [x]}
  - {id: z, uses: "task:x.y", needs: [d, y]}
""")  # a diamond beside the chain x, y: a lane would need a group inside a chord's member
    assert shape(compile_run(spec, "r", {})) == [[["a"], ["x"]], [["b"], ["c"], ["y"]], "d", "z"]


def test_only_a_lanes_last_step_stores_its_result_for_the_chord():
    sig = compile_run(dag(TWO_BRANCHES), "r", {})
    members = sig.tasks
    assert [[t.options.get("ignore_result", False) for t in m.tasks] for m in members] == [[True, False]] * 2
    assert sig.body.options["ignore_result"] is True


def test_a_join_waits_only_for_the_needs_that_have_not_ended():
    sig = compile_run(dag(TWO_BRANCHES), "r", {"a": "succeeded", "d": "succeeded"})
    assert shape(sig) == [[["b"], ["c", "e"]], "orchestra.finish"]


def test_a_segment_ends_at_a_boundary_between_parts():
    sig = compile_run(dag(TWO_BRANCHES), "r", {}, segment_size=4)
    assert shape(sig) == [[["a", "c"], ["b", "d"]], "orchestra.advance"]
    assert shape(compile_run(dag(TWO_BRANCHES), "r", {"a": "succeeded", "b": "succeeded", "c": "succeeded",
                                                       "d": "succeeded"}, segment_size=4)) == ["e"]


def test_a_lane_longer_than_a_segment_is_compiled_by_layers():
    spec = dag("""\
  - {id: a0, uses: "task:x.y", needs: []}
  - {id: a1, uses: "task:x.y", needs: [a0]}
  - {id: a2, uses: "task:x.y", needs: [a1]}
  - {id: b0, uses: "task:x.y", needs: []}
  - {id: b1, uses: "task:x.y", needs: [b0]}
  - {id: b2, uses: "task:x.y", needs: [b1]}
""")  # a lane is one message carrying the rest of its chain: a segment bounds it
    assert shape(compile_run(spec, "r", {}, segment_size=2)) == [[["a0"], ["b0"]], "orchestra.advance"]
    assert shape(compile_run(spec, "r", {}, segment_size=3)) == [[["a0", "a1", "a2"], ["b0", "b1", "b2"]],
                                                                  "orchestra.finish"]


def test_every_plan_places_each_step_once_and_after_its_needs():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 12)
        lines = []
        for i in range(n):
            needs = sorted(rng.sample(range(i), rng.randint(0, min(i, 3))))
            lines.append(f"  - {{id: s{i}, uses: 'task:x.y', needs: [{', '.join(f's{j}' for j in needs)}]}}\n")
        spec = dag("".join(lines))
        parts = plan(spec, spec.order, longest=rng.randint(1, 12))
        where = {sid: (p, lane, k) for p, part in enumerate(parts) for lane, steps in enumerate(part)
                 for k, sid in enumerate(steps)}
        assert sorted(where) == sorted(spec.order) and sum(len(lane) for part in parts for lane in part) == n
        for sid in spec.order:
            for need in spec.by_id[sid].needs or []:
                (p, lane, k), (q, other, j) = where[need], where[sid]
                assert p < q or (p == q and lane == other and k < j), (lines, parts)


@pytest.mark.slow
def test_on_workers_a_branch_finishes_while_a_slow_independent_one_still_runs(workers, register, redis_client):
    key = f"sp-{uuid.uuid4().hex[:8]}"
    register(f"""
name: {key}
steps:
  - {{id: a, uses: "task:tests.support.steps.count", needs: [], with: {{key: {key}:a, value: 1}}}}
  - {{id: b, uses: "task:tests.support.steps.slow", needs: [], with: {{key: {key}:b, seconds: 1.5}}}}
  - {{id: c, uses: "task:tests.support.steps.count", needs: [a], with: {{key: {key}:c, value: 3}}}}
  - {{id: d, uses: "task:tests.support.steps.count", needs: [b], with: {{key: {key}:d, value: 4}}}}
  - {{id: e, uses: "task:tests.support.steps.add", needs: [c, d],
     with: {{a: "{{{{ steps.c.output }}}}", b: "{{{{ steps.d.output }}}}"}}}}
""")
    run, _ = submit_run(key, {})
    view = wait_for_run(run.id)
    assert view["status"] == "succeeded"
    steps = {s["id"]: s for s in view["steps"]}
    assert steps["c"]["finished_at"] < steps["b"]["finished_at"]  # c waited for a only
    assert steps["e"]["started_at"] >= max(steps["c"]["finished_at"], steps["d"]["finished_at"])
    assert steps["e"]["output"] == 7
    assert redis_client.get(f"{key}:b:done") == "1"


@pytest.mark.slow
def test_on_workers_a_for_each_inside_lanes_fans_out_and_the_join_sees_every_item(workers, register, redis_client):
    key = f"spf-{uuid.uuid4().hex[:8]}"
    spec = register(f"""
name: {key}
steps:
  - {{id: a, uses: "task:tests.support.steps.count", needs: [], with: {{key: {key}:a, value: 1}}}}
  - {{id: mid, uses: "task:tests.support.steps.probe", needs: [a], for_each: "input.items",
     with: {{key: {key}:mid, seconds: 0.01, item: "{{{{ item }}}}"}}}}
  - {{id: c, uses: "task:tests.support.steps.count", needs: [mid],
     with: {{key: {key}:c, value: "{{{{ steps.mid.output | length }}}}"}}}}
  - {{id: b, uses: "task:tests.support.steps.slow", needs: [], with: {{key: {key}:b, seconds: 0.5}}}}
  - {{id: last, uses: "task:tests.support.steps.probe", needs: [b], for_each: "input.items", max_parallel: 2,
     with: {{key: {key}:last, seconds: 0.01, item: "{{{{ item }}}}"}}}}
  - {{id: join, uses: "task:tests.support.steps.add", needs: [c, last],
     with: {{a: "{{{{ steps.c.output }}}}", b: "{{{{ steps.last.output | length }}}}"}}}}
""")
    assert shape(compile_run(spec, "r", {})) == [[["a", "mid", "c"], ["b", "last"]], "join"]  # fan-outs in lanes
    run, _ = submit_run(key, {"items": [1, 2, 3, 4, 5]})
    view = wait_for_run(run.id, timeout=60)
    assert view["status"] == "succeeded"
    steps = {s["id"]: s for s in view["steps"] if s["item"] is None}
    assert steps["mid"]["output"] == steps["last"]["output"] == [1, 2, 3, 4, 5]
    assert steps["join"]["output"] == 10
    assert steps["join"]["started_at"] >= max(steps["c"]["finished_at"], steps["last"]["finished_at"])
    assert redis_client.get(f"{key}:mid:total") == redis_client.get(f"{key}:last:total") == "5"
