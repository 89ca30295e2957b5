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


def test_the_audit_invariant_trips_on_an_altered_event_and_on_a_start_after_cancel() -> None:
    from types import SimpleNamespace

    from orchestra.audit import ChainHead, chain_event
    from tests.chaos.oracle import Check

    def trail(*types: tuple[str, str | None]) -> tuple[list[SimpleNamespace], str]:
        head = ChainHead("run-1", 0, "")
        events = [SimpleNamespace(**chain_event(head, t, step_id=sid)) for t, sid in types]
        return events, head.hash

    def audit(events: list[SimpleNamespace], head: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        stub = SimpleNamespace(events=events, run=SimpleNamespace(audit_hash=head),
                               fail=lambda invariant, detail: found.append((invariant, detail)))
        Check.audit(stub)  # type: ignore[arg-type]
        return found

    events, head = trail(("run.submitted", None), ("step.started", "s0"), ("run.cancelled", None))
    assert audit(events, head) == []
    late, late_head = trail(("run.submitted", None), ("run.cancelled", None), ("step.started", "s1"))
    assert audit(late, late_head) == [("audit", "step.started after run.cancelled (seq 2): ['s1@3']")]
    events[1].payload = {"attempt": 2}
    assert [i for i, _ in audit(events, head)] == ["audit"]
