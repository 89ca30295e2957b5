"""Orchestra's per-step overhead against bare Celery.

N runs of a 10-step no-op linear workflow through Orchestra (every step's state
and audit events committed) against N bare Celery chains of the same 10 no-op
tasks, on the same Redis, with the same prefork concurrency, acks_late and
prefetch 1.

Two bare baselines: Celery as it comes with a result backend (every task's
result stored in Redis), which is the ratio the aim is about, and Celery with
results ignored, as Orchestra ignores them for every step outside a chord.
Both ratios are printed.

Both sides queue all their runs first, start a worker that idles on an empty
queue until it is ready, and then turn it onto the runs and start the clock, so
steps/s measures executing steps, the same way on both sides. Queueing is timed too and
printed separately: an Orchestra submission validates the input and commits the
run, its step rows and its audit event before it publishes, which a bare
``apply_async`` does not.

    .venv/bin/python bench/overhead.py [--runs 300] [--concurrency 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import environment, progress, worker  # noqa: E402

STEPS = 10


def timed_execution(label: str, app: str, concurrency: int, log: Path, total_runs: int,
                    runs_done: Callable[[], int]) -> float:
    """Turn a ready worker onto the queued runs; return steps/s until the last one is done.

    ``runs_done`` is polled every 50 ms and must be one cheap round trip, so the
    polling takes the same small share of the machine on both sides.
    """
    with worker(app, concurrency, log) as start:
        started = start()
        done = 0
        while done < total_runs:
            time.sleep(0.05)
            done = runs_done()
            progress(label, done * STEPS, total_runs * STEPS, started)
        elapsed = time.perf_counter() - started
    sys.stderr.write("\n")
    return total_runs * STEPS / elapsed


def bench_bare(runs: int, concurrency: int, tmp: Path) -> tuple[float, float]:
    from celery import chain

    from bench.bare import app

    started = time.perf_counter()
    results = [chain(*(app.signature("bare.noop", immutable=True) for _ in range(STEPS))).apply_async()
               for _ in range(runs)]
    queued = runs / (time.perf_counter() - started)
    keys = [app.backend.get_key_for_task(r.id) for r in results]  # a chain's result is its last task's
    stored = app.backend.client
    rate = timed_execution("bare celery", "bench.bare", concurrency, tmp / "bare.log", runs,
                           lambda: sum(value is not None for value in stored.mget(keys)))
    return queued, rate


def bench_lean(runs: int, concurrency: int, tmp: Path) -> tuple[float, float]:
    import redis
    from celery import chain

    from bench.bare import LEAN_DONE, lean

    counter = redis.Redis.from_url(lean.conf.broker_url)
    counter.delete(LEAN_DONE)
    started = time.perf_counter()
    for _ in range(runs):
        steps = [lean.signature("lean.noop", immutable=True) for _ in range(STEPS - 1)]
        chain(*steps, lean.signature("lean.done", immutable=True)).apply_async()
    queued = runs / (time.perf_counter() - started)
    rate = timed_execution("bare celery, results ignored", "bench.bare:lean", concurrency, tmp / "lean.log", runs,
                           lambda: int(counter.get(LEAN_DONE) or 0))
    return queued, rate


def bench_orchestra(runs: int, concurrency: int, tmp: Path) -> tuple[float, float]:
    from sqlalchemy import func, select

    from orchestra import db
    from orchestra.models import Run
    from orchestra.runs import submit_run
    from orchestra.workflows import register_workflow

    steps = "\n".join(f"  - {{id: s{i}, uses: 'task:examples.noop'}}" for i in range(STEPS))
    register_workflow(f"name: bench-noop\nsteps:\n{steps}\n")
    started = time.perf_counter()
    for _ in range(runs):
        submit_run("bench-noop", {})
    queued = runs / (time.perf_counter() - started)

    def succeeded() -> int:
        with db.read_session() as session:
            return session.scalar(select(func.count()).select_from(Run).where(Run.status == "succeeded")) or 0

    earlier = succeeded()  # from previous rounds

    rate = timed_execution("orchestra", "workers.app", concurrency, tmp / "orchestra.log", runs,
                           lambda: succeeded() - earlier)
    return queued, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="Repeat both sides; the median ratio is the figure.")
    parser.add_argument("--only", choices=["bare", "orchestra"], help="Run one side only.")
    args = parser.parse_args()
    nan = (float("nan"), float("nan"))
    ratios, lean_ratios = [], []
    with environment() as tmp:  # one Redis and one database: the Celery apps bind to their URL at import
        for round_ in range(1, args.rounds + 1):
            bare = bench_bare(args.runs, args.concurrency, tmp) if args.only in (None, "bare") else nan
            lean = bench_lean(args.runs, args.concurrency, tmp) if args.only in (None, "bare") else nan
            ours = bench_orchestra(args.runs, args.concurrency, tmp) if args.only in (None, "orchestra") else nan
            ratios.append(ours[1] / bare[1])
            lean_ratios.append(ours[1] / lean[1])
            print(f"round {round_}: queueing {args.runs} runs: bare apply_async {bare[0]:7.1f} runs/s · "
                  f"orchestra submit {ours[0]:7.1f} runs/s (validated, recorded and audited before publishing)")
            print(f"round {round_}: bare celery {bare[1]:7.1f} steps/s (results stored) · "
                  f"{lean[1]:7.1f} steps/s (results ignored) · orchestra {ours[1]:7.1f} steps/s "
                  f"(every step's state and audit events committed) · ratio {ratios[-1]:.2f} ({lean_ratios[-1]:.2f})")
    print(f"median ratio over {args.rounds} rounds: {statistics.median(ratios):.2f} of bare Celery as it comes "
          f"(aim: >= 0.80); {statistics.median(lean_ratios):.2f} of bare Celery with results ignored")


if __name__ == "__main__":
    main()
