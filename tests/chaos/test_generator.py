"""The chaos generator and oracle, without workers: a seed replays its plan, and every plan is a valid workflow."""

from __future__ import annotations

from collections import Counter

from orchestra.spec import load_spec
from tests.chaos.generator import ALWAYS, generate
from tests.chaos.oracle import predict


def test_a_seed_replays_the_same_plan() -> None:
    assert generate(17).describe() == generate(17).describe()
    assert generate(17).describe() != generate(18).describe()


def test_every_generated_workflow_validates_and_every_outcome_and_fault_is_planned() -> None:
    outcomes: Counter[str] = Counter()
    planned: Counter[str] = Counter()
    for seed in range(1, 201):
        plan = generate(seed)
        planned["flushall"] += plan.flush_after is not None
        planned["kill_worker"] += plan.kill_worker is not None
        for run in plan.runs:
            run.name = f"chaos-{seed}-{run.index}"
            load_spec(run.spec_text())
            outcomes[predict(run)] += 1
            planned["duplicate"] += len(run.duplicates)
            planned["cancel"] += run.cancel_at is not None
            for s in run.steps:
                planned["kill_self"] += bool(s.kills)
                planned["kill_always"] += s.kills == ALWAYS
                planned["timeout"] += bool(s.slow_times)
                planned["failure"] += bool(s.fail_times)
                planned["rate_limited"] += s.limited
                planned["for_each"] += bool(s.items)
                planned["join"] += len(s.needs or []) > 1
                planned["if"] += s.when is not None
                planned[s.kind] += 1
    assert set(outcomes) == {"succeeded", "failed", "cancelled"}, outcomes
    for kind in ("flushall", "kill_worker", "duplicate", "cancel", "kill_self", "kill_always", "timeout", "failure",
                 "rate_limited", "for_each", "join", "if", "task", "http", "human", "signal"):
        assert planned[kind] >= 5, (kind, planned)
