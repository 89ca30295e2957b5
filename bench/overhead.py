"""Orchestra's per-step overhead against bare Celery.

N runs of a 10-step no-op linear workflow through Orchestra (every step's state
and audit events committed) against N bare Celery chains of the same 10 no-op
tasks, on the same Redis, with the same prefork concurrency, acks_late and
prefetch 1. Prints steps/s for both and their ratio.

    .venv/bin/python bench/overhead.py [--runs 100] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import environment, progress, worker  # noqa: E402

STEPS = 10


def bench_bare(runs: int, concurrency: int, tmp: Path) -> float:
    from celery import chain

    from bench.bare import app

    with worker("bench.bare", concurrency, tmp / "bare.log"):
        started = time.perf_counter()
        results = [chain(*(app.signature("bare.noop", immutable=True) for _ in range(STEPS))).apply_async()
                   for _ in range(runs)]
        done = 0
        while done < runs:
            done = sum(1 for r in results if r.ready())
            progress("bare celery", done * STEPS, runs * STEPS, started)
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    sys.stderr.write("\n")
    return runs * STEPS / elapsed


def bench_orchestra(runs: int, concurrency: int, tmp: Path) -> float:
    from sqlalchemy import func, select

    from orchestra import db
    from orchestra.models import Run
    from orchestra.runs import submit_run
    from orchestra.workflows import register_workflow

    steps = "\n".join(f"  - {{id: s{i}, uses: 'task:examples.noop'}}" for i in range(STEPS))
    register_workflow(f"name: bench-noop\nsteps:\n{steps}\n")
    with worker("workers.app", concurrency, tmp / "orchestra.log"):
        started = time.perf_counter()
        for _ in range(runs):
            submit_run("bench-noop", {})
        sys.stderr.write(f"submitted {runs} runs in {time.perf_counter() - started:.2f}s\n")
        done = 0
        while done < runs:
            with db.read_session() as session:
                done = session.scalar(select(func.count()).select_from(Run).where(Run.status == "succeeded")) or 0
            progress("orchestra", done * STEPS, runs * STEPS, started)
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    sys.stderr.write("\n")
    return runs * STEPS / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--only", choices=["bare", "orchestra"], help="Run one side only.")
    args = parser.parse_args()
    with environment() as tmp:
        bare = bench_bare(args.runs, args.concurrency, tmp) if args.only != "orchestra" else float("nan")
        ours = bench_orchestra(args.runs, args.concurrency, tmp) if args.only != "bare" else float("nan")
    print(f"bare celery: {bare:8.1f} steps/s")
    print(f"orchestra:   {ours:8.1f} steps/s  (state and audit committed per step)")
    print(f"ratio:       {ours / bare:8.2f}  (aim: >= 0.80)")


if __name__ == "__main__":
    main()
