"""Workflows and fault schedules generated from a seed.

``generate(seed)`` gives a ``SeedPlan``: a few small runs (each its own
workflow) and the faults to inject into them. Everything follows from
``random.Random(seed)``, so a seed replays the same plan; what the workers make
of it still depends on timing, which is the point of running many seeds.

The troubles a step can be given are kept apart so the oracle's prediction is
exact: a step fails N times (``fail_times``), or is slow past its ``timeout``
N times (``slow_times``), or kills its own worker (``kills``: once, or on every
execution), never two of these at once. A run that is cancelled has no trouble
that would fail it first.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

ALWAYS = 99  # tasks/chaos.py: kill the worker on every execution
SLOW_SECONDS = 3.0  # how long a slow execution takes; its step's timeout is 1s
SLEEPER_SECONDS = 3.0  # a step the driver cancels or kills a worker under


@dataclass
class StepPlan:
    id: str
    kind: str  # task | http | human | signal
    needs: list[str] | None = None  # None: follows the step above
    when: bool | None = None  # the step has an `if`, and it evaluates to this
    items: list[str] | None = None  # for_each over these values
    max_parallel: int | None = None
    attempts: int = 1
    fail_times: int = 0  # task: raises; http: the server answers 503
    slow_times: int = 0  # slow past `timeout` (task sleeps; http server sleeps)
    kills: int = 0  # task: kill its own worker process on the first N executions (ALWAYS: every one)
    sleep: float = 0.0
    limited: bool = False  # http through the rate-limited connector
    decisions: list[str] = field(default_factory=list)  # human: one per item (or one)
    on_reject: str = "continue"
    signal_early: bool = False  # signal: delivered right after submit, before the step parks
    sleeper: bool = False  # the driver acts while this step sleeps (cancel or kill -9)

    @property
    def timeout(self) -> float | None:
        return 1.0 if self.slow_times else None

    def fails_item(self, index: int) -> bool:
        """Whether item ``index`` (or the step, -1) must end failed under the target semantics."""
        if self.kind == "human":
            decision = self.decisions[max(index, 0)] if self.items else self.decisions[0]
            if index == -1 and self.items:
                return any(d == "reject" for d in self.decisions) and self.on_reject == "fail"
            return decision == "reject" and self.on_reject == "fail"
        if self.kind == "signal":
            return False
        return self.kills == ALWAYS or self.fail_times >= self.attempts or self.slow_times >= self.attempts

    @property
    def must_fail(self) -> bool:
        return self.when is not False and self.fails_item(-1)


@dataclass
class Duplicate:
    step: str
    item: int  # -1 for the step itself
    moment: str  # started: while it executes; succeeded: after it succeeded, the run still running


@dataclass
class RunPlan:
    seed: int
    index: int
    steps: list[StepPlan]
    input: dict[str, Any]
    cancel_at: str | None = None  # a sleeper task (cancel while it runs) or a human step (cancel while it waits)
    duplicates: list[Duplicate] = field(default_factory=list)
    name: str = ""

    @property
    def by_id(self) -> dict[str, StepPlan]:
        return {s.id: s for s in self.steps}

    def spec(self) -> dict[str, Any]:
        steps = [_step_spec(s) for s in self.steps]
        return {"name": self.name, "connectors": ["chaos", "chaos_limited"],
                "input_schema": {"type": "object"}, "steps": steps}

    def spec_text(self) -> str:
        return json.dumps(self.spec())


@dataclass
class SeedPlan:
    seed: int
    runs: list[RunPlan]
    flush_after: float | None = None  # FLUSHALL (then recover) this many seconds into the batch
    kill_worker: tuple[int, str] | None = None  # (run index, sleeper step): kill -9 its worker while it sleeps

    def describe(self) -> str:
        lines = [f"seed {self.seed}: flush_after={self.flush_after} kill_worker={self.kill_worker}"]
        for run in self.runs:
            lines.append(f"  run {run.index} cancel_at={run.cancel_at} duplicates={run.duplicates}")
            for s in run.steps:
                lines.append(f"    {s}")
        return "\n".join(lines)


def _step_spec(s: StepPlan) -> dict[str, Any]:
    out: dict[str, Any] = {"id": s.id}
    item = "{{ item }}" if s.items else None
    if s.kind == "task":
        out["uses"] = "task:chaos.work"
        out["with"] = {"label": s.id, "value": item or f"v-{s.id}", "fail_times": s.fail_times, "kills": s.kills,
                       "sleep": s.sleep, "slow_times": s.slow_times, "slow_seconds": SLOW_SECONDS}
    elif s.kind == "http":
        out["uses"] = "http:chaos_limited" if s.limited else "http:chaos"
        out["with"] = {"method": "POST", "path": f"/effect/{s.id}",
                       "params": {"fail_times": s.fail_times, "slow_times": s.slow_times,
                                  "slow_seconds": SLOW_SECONDS},
                       "json": {"run": "{{ run.id }}", "step": s.id, "item": item, "value": f"v-{s.id}"}}
    elif s.kind == "human":
        out["uses"] = "human"
        out["with"] = {"title": f"chaos {s.id} " + (item or ""), "assignees": ["group:chaos"]}
        out["on_reject"] = s.on_reject
    else:
        out["uses"] = "signal"
        out["with"] = {"name": f"sig_{s.id}"}
    if s.needs is not None:
        out["needs"] = s.needs
    if s.when is not None:
        out["if"] = f"input.go_{s.id}"
    if s.items is not None:
        out["for_each"] = f"input.items_{s.id}"
        if s.max_parallel:
            out["max_parallel"] = s.max_parallel
    if s.attempts > 1:
        out["retry"] = {"attempts": s.attempts, "backoff": "200ms", "max_backoff": "1s"}
    if s.timeout:
        out["timeout"] = s.timeout
    return out


def signal_payload(step_id: str) -> dict[str, Any]:
    return {"value": f"p-{step_id}"}


def _trouble(rng: random.Random, s: StepPlan) -> None:
    roll = rng.random()
    if s.kind == "task":
        if roll < 0.25:
            s.fail_times = rng.randint(1, 2)
            s.attempts = rng.choice([s.fail_times, s.fail_times + 1, 3])
        elif roll < 0.35:
            s.slow_times = rng.randint(1, 2)
            s.attempts = rng.choice([s.slow_times, s.slow_times + 1])
        elif roll < 0.45:
            s.kills = ALWAYS if rng.random() < 0.25 else 1
        elif roll < 0.6:
            s.attempts = rng.randint(1, 3)
    elif s.kind == "http":
        if roll < 0.2:
            s.fail_times = rng.randint(1, 2)
            s.attempts = rng.choice([s.fail_times, s.fail_times + 1, 3])
        elif roll < 0.35:
            s.slow_times = rng.randint(1, 2)
            s.attempts = rng.choice([s.slow_times, s.slow_times + 1])
        s.limited = rng.random() < (0.6 if s.items else 0.2)


def _clear_trouble(s: StepPlan) -> None:
    s.fail_times = s.slow_times = s.kills = 0
    s.decisions = ["approve" if d == "reject" and s.on_reject == "fail" else d for d in s.decisions]


def _run(rng: random.Random, seed: int, index: int) -> RunPlan:
    steps: list[StepPlan] = []
    data: dict[str, Any] = {}
    for i in range(rng.randint(2, 5)):
        sid = f"s{i}"
        kind = rng.choices(["task", "http", "human", "signal"], weights=[45, 30, 15, 10])[0]
        s = StepPlan(id=sid, kind=kind)
        if i > 0:
            roll = rng.random()
            earlier = [p.id for p in steps]
            if roll < 0.3:
                s.needs = sorted(rng.sample(earlier, k=min(len(earlier), rng.choice([1, 2, 2]))))
            elif roll < 0.4:
                s.needs = []
        if rng.random() < 0.15:
            s.when = rng.random() < 0.5
            data[f"go_{sid}"] = s.when
        if kind in ("task", "http") and rng.random() < 0.35 or kind == "human" and rng.random() < 0.3:
            s.items = [f"{sid}-{k}-{rng.randrange(16 ** 4):04x}" for k in range(rng.randint(2, 4))]
            s.max_parallel = rng.choice([None, 1, 2, len(s.items)])
            data[f"items_{sid}"] = s.items
        if kind == "task" and rng.random() < 0.3:
            s.sleep = round(rng.uniform(0.2, 1.0), 2)
        if kind == "human":
            s.decisions = [rng.choices(["approve", "reject"], weights=[7, 3])[0] for _ in (s.items or [None])]
            s.on_reject = rng.choice(["continue", "fail"])
        if kind == "signal":
            s.signal_early = rng.random() < 0.4
        _trouble(rng, s)
        steps.append(s)
    run = RunPlan(seed=seed, index=index, steps=steps, input=data)
    if rng.random() < 0.2:
        humans = [s.id for s in steps if s.kind == "human" and not s.items and s.when is not False]
        if humans and rng.random() < 0.4:
            run.cancel_at = rng.choice(humans)
        else:
            run.cancel_at = _add_sleeper(rng, run)
        for s in steps:
            _clear_trouble(s)
    if rng.random() < 0.35:
        targets = [s for s in run.steps if s.kind in ("task", "http") and s.when is not False]
        for s in rng.sample(targets, k=min(len(targets), rng.randint(1, 2))):
            item = rng.randrange(len(s.items)) if s.items and rng.random() < 0.7 else -1
            run.duplicates.append(Duplicate(s.id, item, rng.choice(["started", "succeeded"])))
    return run


def _add_sleeper(rng: random.Random, run: RunPlan) -> str:
    """A plain task step that sleeps long enough for the driver to act while it runs."""
    position = rng.randint(0, len(run.steps))
    sid = f"s{len(run.steps)}"
    sleeper = StepPlan(id=sid, kind="task", sleep=SLEEPER_SECONDS, sleeper=True)
    if position < len(run.steps):
        after = run.steps[position]
        sleeper.needs = after.needs if after.needs is not None else ([run.steps[position - 1].id] if position else [])
        after.needs = [sid]
    run.steps.insert(position, sleeper)
    return sid


def generate(seed: int) -> SeedPlan:
    rng = random.Random(seed)
    runs = [_run(rng, seed, i) for i in range(rng.randint(2, 3))]
    plan = SeedPlan(seed=seed, runs=runs)
    if rng.random() < 0.15:
        plan.flush_after = round(rng.uniform(1.0, 4.0), 1)
    if rng.random() < 0.2:
        run = rng.choice([r for r in runs if r.cancel_at is None] or [None])
        if run is not None:
            plan.kill_worker = (run.index, _add_sleeper(rng, run))
    return plan
