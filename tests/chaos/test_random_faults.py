"""The durable-execution promise under random faults, checked by an oracle (issue 11, "Proof").

From each seed ``tests/chaos/generator.py`` makes a few small workflows (chains,
DAG joins, ``if``, ``for_each`` with ``max_parallel``, steps that fail N times
under a retry policy, human and signal steps, http steps against the loopback
effects server) and a fault schedule (duplicate step messages, kill -9 of a
worker process under a step, rate-limit hold-backs, FLUSHALL then ``recover``,
timeouts, a cancel in the middle). ``tests/chaos/driver.py`` runs them on real
worker processes, real Redis and the test database, and ``tests/chaos/oracle.py``
checks every run against what it must end as.

Seeds: ``SEED=17`` (or ``SEED=3,17``) replays those; ``CHAOS_SEEDS=1-200`` (ranges
and commas) runs many; without either, ``DEFAULT_SEEDS``. ``CHAOS_BATCH`` seeds
share one batch of workers (default 5); ``CHAOS_BUDGET`` seconds bound the whole
run (no new batch starts after it; default 2400). ``make chaos`` runs 200 seeds,
``make chaos SEED=...`` replays one.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest

from tests.chaos.driver import FAULTS, WORKER_ENV, Batch, BatchResult, Workers, config_dir
from tests.chaos.effects import EffectsServer
from tests.chaos.generator import generate
from tests.chaos.oracle import INVARIANTS, Violation

pytestmark = pytest.mark.slow

DEFAULT_SEEDS = "1-5"  # what plain `pytest` (and `make test`) runs: one batch, about a minute


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def chosen_seeds() -> list[int]:
    return parse_seeds(os.environ.get("SEED") or os.environ.get("CHAOS_SEEDS") or DEFAULT_SEEDS)


def table(results: list[BatchResult]) -> str:
    faults: Counter[str] = Counter()
    runs_broken: dict[str, set[str]] = {name: set() for name in INVARIANTS}
    seeds_broken: dict[str, set[int]] = {name: set() for name in INVARIANTS}
    for result in results:
        faults.update(result.faults)
        for v in result.violations:
            runs_broken.setdefault(v.invariant, set()).add(v.run_id)
            seeds_broken.setdefault(v.invariant, set()).add(v.seed)
    seeds = [s for r in results for s in r.seeds]
    failing = {v.seed for r in results for v in r.violations}
    lines = [
        "chaos: randomized faults against the oracle",
        f"  seeds {len(seeds)} ({min(seeds, default=0)}..{max(seeds, default=0)}), runs {sum(r.runs for r in results)}, "
        f"{sum(r.seconds for r in results):.0f}s; seeds with a violation: {len(failing)}",
        "  faults injected: " + ", ".join(f"{k} {faults[k]}" for k in FAULTS),
        "  violations        runs  seeds",
    ]
    for name in INVARIANTS:
        hit = sorted(seeds_broken.get(name, ()))
        shown = ", ".join(map(str, hit[:15])) + (f" ... ({len(hit)})" if len(hit) > 15 else "")
        lines.append(f"    {name:<14} {len(runs_broken.get(name, ())):>5}  {shown or '-'}")
    return "\n".join(lines)


def report(violations: list[Violation]) -> str:
    by_seed: dict[int, list[Violation]] = {}
    for v in violations:
        by_seed.setdefault(v.seed, []).append(v)
    out = []
    for seed in sorted(by_seed):
        out.append(f"seed {seed}  (replay: make chaos SEED={seed})")
        out.extend(f"    {v}" for v in by_seed[seed][:8])
        if len(by_seed[seed]) > 8:
            out.append(f"    ... and {len(by_seed[seed]) - 8} more")
    return "\n".join(out)


@pytest.mark.timeout(int(os.environ.get("CHAOS_BUDGET", "2400")) + 600)
def test_random_faults_keep_every_invariant(isolated_workers: Any, register: Any, stack: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import time

    seeds = chosen_seeds()
    batch_size = int(os.environ.get("CHAOS_BATCH", "5"))
    budget = float(os.environ.get("CHAOS_BUDGET", "2400"))
    server = EffectsServer().start()
    env = {**WORKER_ENV, "ORCHESTRA_CONFIG_DIR": str(config_dir(stack.tmp)), "ORCHESTRA_CHAOS_URL": server.url}
    workers = Workers(isolated_workers, env)
    results: list[BatchResult] = []
    began = time.monotonic()
    try:
        for start in range(0, len(seeds), batch_size):
            if time.monotonic() - began > budget:
                break
            plans = [generate(seed) for seed in seeds[start:start + batch_size]]
            result = Batch(plans, server, workers, register).run()
            results.append(result)
            if os.environ.get("CHAOS_VERBOSE"):
                with capsys.disabled():
                    print(f"\nbatch {result.seeds}: {result.seconds:.0f}s, faults {dict(result.faults)}, "
                          f"{result.batch_faults}")
                    for line in result.outcomes:
                        print("   ", line)
                    for v in result.violations:
                        print("    !", v)
            if result.violations and result.batch_faults:
                for v in result.violations:
                    v.detail += f" [batch faults: {'; '.join(result.batch_faults)}]"
    finally:
        workers.stop()
        server.stop()
    summary = table(results)
    with capsys.disabled():
        print("\n" + summary)
    violations = [v for r in results for v in r.violations]
    assert results, "no batch ran"
    assert not violations, f"{summary}\n\n{report(violations)}"
