"""The cost of parked runs, and how fast a decision gets the run moving again.

1. Redis memory per parked run: park N runs (default 10,000) at a human step
   with a deadline, the way ``uses: human`` does (its wait hash and its deadline
   entry), and divide the growth of Redis ``used_memory`` by N. Aim: < 2 KB.
   A smaller sample parked through real workers also reports the whole Redis
   growth per parked run, Celery's task results included.
2. Latency from a decision (``decisions.decide`` called) to the next step
   starting on a worker (its ``started_at``), p50 and p99, one decision at a
   time. Aim: p99 < 50 ms. The reference is a bare Celery no-op round trip
   (send, run, read the result) on the same Redis and worker settings.

    .venv/bin/python bench/waits.py [--parked 10000] [--decisions 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import environment, progress, worker  # noqa: E402

SPEC = """
name: bench-wait
steps:
  - id: approve
    uses: human
    with: {title: "Approve {{ input.n }}?", assignees: [group:bench], escalate: [{after: 1d, to: [group:leads]}]}
  - {id: next, uses: "task:examples.noop"}
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def park_in_bulk(count: int) -> float:
    """Park ``count`` runs in the database and the wait store; returns Redis bytes per parked run."""
    from orchestra import db, keys, waits
    from orchestra.ids import new_id
    from orchestra.models import HumanTask, Run, StepRun, utcnow
    from orchestra.steps.human import next_deadline, payload_digest

    policy = {"quorum": 1, "four_eyes": False, "timeout": None, "escalate": [{"after": 86400.0, "to": ["group:leads"]}],
              "on_reject": "continue"}
    tasks: list[HumanTask] = []
    with db.write_session() as session:
        for n in range(count):
            now, run_id, row_id = utcnow(), new_id(), new_id()
            shown = {"title": f"Approve {n}?", "body": None, "show": None}
            session.add(Run(id=run_id, workflow="bench-wait", version=1, status="waiting", input={"n": n},
                            submitted_by="bench", created_at=now, updated_at=now, audit_seq=0, audit_hash=""))
            session.add(StepRun(id=row_id, run_id=run_id, step_id="approve", status="waiting", attempts=1))
            tasks.append(HumanTask(id=new_id(), run_id=run_id, step_id="approve", row_id=row_id, attempt=1,
                                   title=shown["title"], assignees=["group:bench"], shown=shown,
                                   payload_hash=payload_digest(shown), policy=policy, level=0,
                                   deadline=next_deadline(policy, 0, now), status="open", created_at=now))
        session.flush()  # runs before the tasks that reference them
        session.add_all(tasks)
    r = keys.client()
    before = int(r.info("memory")["used_memory"])
    started = time.perf_counter()
    for n, task in enumerate(tasks, start=1):
        waits.store_wait(task.id, waits.HUMAN, task.run_id, task.step_id, level=0, payload_hash=task.payload_hash,
                         deadline=task.deadline)
        if n % 1000 == 0:
            progress("parking", n, count, started)
    sys.stderr.write("\n")
    after = int(r.info("memory")["used_memory"])
    sample = r.memory_usage(keys.WAIT + tasks[0].id) or 0
    print(f"wait hash of one parked run: {sample} B (MEMORY USAGE)")
    return (after - before) / count


def park_through_workers(count: int) -> tuple[list[str], float]:
    """Submit ``count`` runs and let the workers park them; returns their task ids and Redis bytes per run."""
    from orchestra import keys
    from orchestra.decisions import list_tasks
    from orchestra.runs import submit_run

    r = keys.client()
    before = int(r.info("memory")["used_memory"])
    runs = {submit_run("bench-wait", {"n": n})[0].id for n in range(count)}
    started = time.perf_counter()
    while True:
        open_tasks = [t for t in list_tasks("bench", ["bench"], limit=count * 2) if t["run_id"] in runs]
        ready = [t for t in open_tasks if r.exists(keys.WAIT + t["id"])]
        progress("parked by workers", len(ready), count, started)
        if len(ready) == count:
            break
        if time.perf_counter() - started > 300:
            raise RuntimeError("runs did not all park within 300s; see the worker log")
        time.sleep(0.2)
    sys.stderr.write("\n")
    time.sleep(1.0)  # let the last results land
    return [t["id"] for t in ready], (int(r.info("memory")["used_memory"]) - before) / count


def next_step_started(run_id: str) -> Any:
    from sqlalchemy import select

    from orchestra import db
    from orchestra.models import StepRun

    with db.read_session() as session:
        return session.scalar(select(StepRun.started_at).where(StepRun.run_id == run_id, StepRun.step_id == "next"))


def decision_latencies(task_ids: list[str]) -> list[float]:
    """Milliseconds from calling ``decide`` to the next step's ``started_at``, one decision at a time."""
    from orchestra.decisions import decide, get_task

    out: list[float] = []
    started = time.perf_counter()
    for n, task_id in enumerate(task_ids, start=1):
        run_id = get_task(task_id).run_id
        t0 = time.time()
        decide(task_id, "approve", "bench", ["bench"])
        deadline = time.monotonic() + 30
        while (begun := next_step_started(run_id)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the next step of run {run_id} did not start within 30s")
            time.sleep(0.0005)
        out.append((begun.timestamp() - t0) * 1000)
        progress("decisions", n, len(task_ids), started)
    sys.stderr.write("\n")
    return out


def bare_round_trips(count: int) -> list[float]:
    """Milliseconds for a bare Celery no-op: send, run, read the result."""
    from bench.bare import noop

    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        noop.delay().get(timeout=30)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parked", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    with environment() as tmp:
        from orchestra.workflows import register_workflow

        register_workflow(SPEC)
        per_wait = park_in_bulk(args.parked)
        with worker("workers.app", args.concurrency, tmp / "worker.log") as start:
            start()
            task_ids, per_run = park_through_workers(args.decisions)
            latencies = decision_latencies(task_ids)
        with worker("bench.bare", args.concurrency, tmp / "bare.log") as start:
            start()
            bare = bare_round_trips(args.decisions)
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    bare50, bare99 = _percentile(bare, 0.5), _percentile(bare, 0.99)
    print(f"Redis memory per parked run (wait state, {args.parked:,} parked): {per_wait:,.0f} B  (aim < 2048 B)")
    print(f"Redis growth per run parked by workers ({args.decisions}, Celery results included): {per_run:,.0f} B")
    print(f"decision -> next step started ({len(latencies)} decisions): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"mean {statistics.mean(latencies):.1f} ms  (aim p99 < 50 ms)")
    print(f"bare Celery no-op round trip: p50 {bare50:.1f} ms, p99 {bare99:.1f} ms; "
          f"ratio decision/bare: p50 {p50 / bare50:.2f}x, p99 {p99 / bare99:.2f}x")


if __name__ == "__main__":
    main()
