"""The compiler: canvases carry ids only and stay small however long the workflow is."""

from __future__ import annotations

import json

from kombu.utils.json import dumps

from orchestra.compiler import compile_run, layers
from orchestra.spec import load_spec


def linear(n: int):
    steps = "\n".join(f"  - {{id: s{i}, uses: 'task:examples.noop'}}" for i in range(n))
    return load_spec(f"name: long\nsteps:\n{steps}\n")


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
    sig = compile_run(spec, "01900000-0000-7000-8000-000000000000", {})
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
