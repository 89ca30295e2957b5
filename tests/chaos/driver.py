"""The driver: runs a batch of seeds' plans on real workers and injects their faults.

Several seeds share one batch (and its workers) to save start-up time. The
driver submits every run, then polls the database and the effects server and
acts when a plan says so: it decides human tasks and delivers signals as they
appear, publishes duplicate step messages, cancels runs in the middle, kills a
worker under a sleeping step (and starts another), and flushes Redis (then
calls ``recover``). When every run has ended it waits for the system to go quiet
(no queued, unacknowledged or executing work) and hands each run to the oracle.

Batch-wide faults (FLUSHALL, kill -9 of a worker) hit every run in flight, so a
violation in a batch names the batch-wide faults that happened during it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from orchestra import db, keys
from orchestra.errors import OrchestraError
from orchestra.models import HumanTask, Run, StepRun
from tests.chaos.effects import EffectsServer
from tests.chaos.generator import SLEEPER_SECONDS, RunPlan, SeedPlan, signal_payload
from tests.chaos.oracle import Violation, check, predict
from tests.support.harness import ROOT, Worker

ENDED = ("succeeded", "failed", "cancelled")
FAULTS = ("duplicate", "kill_self", "kill_worker", "hold_back", "flushall", "timeout", "cancel", "failure")
CHAOS_CONNECTORS = {
    "chaos": {"kind": "http", "description": "The chaos test's effects server.", "base_url": "http://127.0.0.1:9",
              "base_url_env": "ORCHESTRA_CHAOS_URL", "allow": {"methods": ["POST"], "paths": ["/effect/*"]},
              "timeout": "30s", "retry": {"attempts": 1}},
    "chaos_limited": {"kind": "http", "description": "The effects server behind a low rate limit.",
                      "base_url": "http://127.0.0.1:9", "base_url_env": "ORCHESTRA_CHAOS_URL",
                      "allow": {"methods": ["POST"], "paths": ["/effect/*"]}, "timeout": "30s",
                      "retry": {"attempts": 1}, "rate_limit": "3/s", "burst": 1},
}
WORKER_ENV = {"ORCHESTRA_STALL_SECONDS": "6", "ORCHESTRA_MAX_RECOVERIES": "3"}


def config_dir(tmp: Path) -> Path:
    """config/ with the chaos connectors added, for the chaos workers."""
    target = tmp / "chaos-config"
    target.mkdir(exist_ok=True)
    data = yaml.safe_load((ROOT / "config" / "connectors.yaml").read_text())
    data["connectors"].update(CHAOS_CONNECTORS)
    (target / "connectors.yaml").write_text(yaml.safe_dump(data))
    notifications = ROOT / "config" / "notifications.yaml"
    if notifications.exists():
        (target / "notifications.yaml").write_text(notifications.read_text())
    return target


def step_slow(plan: RunPlan, execution: dict[str, Any]) -> bool:
    """Whether this execution was planned to overrun its step's timeout."""
    step = plan.by_id.get(execution["step"])
    return step is not None and execution["n"] <= step.slow_times


def celery_app() -> Any:
    """The Celery app the workers serve (``orchestra.broker`` owns it; before that ``workers.app`` did)."""
    try:
        from orchestra.broker import celery_app as owner
    except ImportError:
        from workers.app import app

        return app
    return owner()


class Workers:
    """Two worker processes of concurrency 2; a killed one is replaced."""

    def __init__(self, start: Callable[..., Worker], env: dict[str, str], count: int = 2) -> None:
        self.start, self.env = start, env
        self.workers = [start(concurrency=2, env=env) for _ in range(count)]
        self.gone: list[Worker] = []

    def kill(self, pid: int) -> bool:
        victim = next((w for w in self.workers if w.process.pid == pid and w.process.poll() is None), None)
        if victim is None:
            return False
        victim.kill9()
        self.workers.remove(victim)
        self.gone.append(victim)
        self.workers.append(self.start(concurrency=2, env=self.env, ready=False))  # the driver keeps acting
        return True

    def log_count(self, needle: str) -> int:
        return sum(w.log.read_text(errors="replace").count(needle) for w in self._all_logs())

    def _all_logs(self) -> list[Worker]:
        return self.workers + self.gone

    def stop(self) -> None:
        for w in self.workers:
            w.kill9()


@dataclass
class RunState:
    plan: RunPlan
    run_id: str = ""
    status: str = "pending"
    decided: set[tuple[str, int]] = field(default_factory=set)
    signalled: set[str] = field(default_factory=set)
    duplicates_sent: set[int] = field(default_factory=set)
    cancelled: bool = False
    ended_at: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    seeds: list[int]
    runs: int
    faults: Counter[str]
    violations: list[Violation]
    batch_faults: list[str]
    seconds: float
    outcomes: list[str] = field(default_factory=list)


class Batch:
    def __init__(self, plans: list[SeedPlan], server: EffectsServer, workers: Workers, register: Callable[[str], Any],
                 deadline: float = 50.0) -> None:
        self.plans, self.server, self.workers, self.register = plans, server, workers, register
        self.deadline = deadline + (25.0 if any(p.flush_after or p.kill_worker for p in plans) else 0.0)
        self.states = [RunState(run) for p in plans for run in p.runs]
        self.faults: Counter[str] = Counter()
        self.batch_faults: list[str] = []
        self.flush_at = min((p.flush_after for p in plans if p.flush_after), default=None)
        self.kill_targets = [(p.seed, p.kill_worker) for p in plans if p.kill_worker]
        self.killed_worker = False
        self.slow_ticks: list[str] = []

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> BatchResult:
        from orchestra.runs import submit_run
        from orchestra.signals import deliver_signal

        began = time.monotonic()
        nonce = uuid.uuid4().hex[:6]
        retries_before = self.workers.log_count("retry: Retry in")
        for state in self.states:
            state.plan.name = f"chaos-{state.plan.seed}-{state.plan.index}-{nonce}"
            self.register(state.plan.spec_text())
        for state in self.states:
            run, _ = submit_run(state.plan.name, state.plan.input, actor="chaos")
            state.run_id = run.id
            for s in state.plan.steps:
                if s.kind == "signal" and s.signal_early and s.when is not False:
                    deliver_signal(run.id, f"sig_{s.id}", signal_payload(s.id), actor="chaos")
                    state.signalled.add(s.id)
        while time.monotonic() - began < self.deadline:
            tick = time.monotonic()
            more = self._tick(began)
            if time.monotonic() - tick > 1.0:
                self.slow_ticks.append(f"{tick - began:.1f}s: a tick took {time.monotonic() - tick:.1f}s")
            if not more:
                break
            time.sleep(0.2)
        stuck = [s for s in self.states if s.status not in ENDED]
        for state in stuck:
            state.notes.append(f"did not end within {self.deadline:.0f}s: it was {state.status}")
        self._quiesce()
        violations: list[Violation] = []
        for state in self.states:
            observed = {"notes": state.notes, "deadline": round(self.deadline)}
            violations.extend(check(state.plan, state.run_id, self.server, observed))
        for state in stuck:  # stop what is left so the next batch starts clean
            self._cancel(state, count=False)
        if stuck:
            self._quiesce()
        # Celery logs a retry for a failed attempt and for a hold-back alike; failed attempts are audited.
        retried = sum(e.type == "step.retrying" for s in self.states for e in self._events(s.run_id))
        self.faults["hold_back"] += self.workers.log_count("retry: Retry in") - retries_before - retried
        for state in self.states:
            for e in self.server.executions_of(state.run_id):
                self.faults["kill_self"] += e["outcome"] == "killed"
                self.faults["failure"] += e["outcome"] == "failed"
                self.faults["timeout"] += step_slow(state.plan, e)
            for r in self.server.requests_of(state.run_id):
                step = state.plan.by_id.get(r["key"].split(":")[1])
                if step is not None:
                    self.faults["timeout"] += r["n"] <= step.slow_times
                    self.faults["failure"] += step.slow_times < r["n"] <= step.fail_times
        outcomes = [f"seed {s.plan.seed} run {s.plan.index} {s.run_id}: {s.status} (predicted {predict(s.plan)}), "
                    f"{len(s.plan.steps)} steps, duplicates {len(s.duplicates_sent)}, cancel_at {s.plan.cancel_at}"
                    for s in self.states]
        return BatchResult([p.seed for p in self.plans], len(self.states), self.faults, violations,
                           self.batch_faults + self.slow_ticks, time.monotonic() - began, outcomes)

    @staticmethod
    def _events(run_id: str) -> list[Any]:
        from orchestra.audit import list_events

        with db.read_session() as session:
            return list_events(session, run_id)

    def _tick(self, began: float) -> bool:
        """One look at every run and one round of actions; False when every run has ended."""
        ids = [s.run_id for s in self.states]
        with db.read_session() as session:
            statuses = dict(session.execute(select(Run.id, Run.status).where(Run.id.in_(ids))).all())
            open_ids = [i for i in ids if statuses.get(i) not in ENDED]
            rows = list(session.scalars(select(StepRun).where(StepRun.run_id.in_(open_ids)))) if open_ids else []
            tasks = list(session.scalars(select(HumanTask).where(HumanTask.run_id.in_(open_ids),
                                                                  HumanTask.status == "open"))) if open_ids else []
        by_row = {r.id: r for r in rows}
        for state in self.states:
            state.status = statuses.get(state.run_id, "missing")
            if state.status in ENDED:
                state.ended_at = state.ended_at or time.monotonic()
                continue
            mine = {(r.step_id, r.item): r for r in rows if r.run_id == state.run_id}
            self._decide(state, [t for t in tasks if t.run_id == state.run_id], by_row)
            self._signal(state, mine)
            self._cancel_at_sleeper(state)
            self._duplicate(state, mine)
        if any(s.status not in ENDED for s in self.states):
            self._flush(began)
            self._kill_worker()
            return True
        return False

    # -- actions -------------------------------------------------------------------------------------------

    def _decide(self, state: RunState, tasks: list[HumanTask], by_row: dict[str, StepRun]) -> None:
        from orchestra.decisions import decide

        for task in tasks:
            row = by_row.get(task.row_id)
            if row is None or row.status != "waiting":
                continue
            step = state.plan.by_id[task.step_id]
            if state.plan.cancel_at == step.id:
                self._cancel(state)
                return
            decision = step.decisions[max(row.item, 0)]
            try:
                decide(task.id, decision, "chaos-approver", ("chaos",), comment="chaos")
                state.decided.add((step.id, row.item))
            except OrchestraError as exc:  # not parked yet, or the run moved on: look again next tick
                state.notes.append(f"decide {task.step_id}[{row.item}]: {exc.message}")

    def _signal(self, state: RunState, rows: dict[tuple[str, int], StepRun]) -> None:
        from orchestra.signals import deliver_signal

        for s in state.plan.steps:
            row = rows.get((s.id, -1))
            if s.kind == "signal" and s.id not in state.signalled and row is not None and row.status == "waiting":
                try:
                    deliver_signal(state.run_id, f"sig_{s.id}", signal_payload(s.id), actor="chaos")
                    state.signalled.add(s.id)
                except OrchestraError as exc:
                    state.notes.append(f"signal {s.id}: {exc.message}")

    def _cancel(self, state: RunState, count: bool = True) -> None:
        from orchestra.runs import cancel_run

        if state.cancelled:
            return
        try:
            cancel_run(state.run_id, actor="chaos", reason="chaos: cancel in the middle")
            state.cancelled = True
            if count:
                self.faults["cancel"] += 1
        except OrchestraError as exc:
            state.notes.append(f"cancel: {exc.message}")
            state.cancelled = True
            if count:  # the run ended before the driver got to it: the fault was not injected
                state.plan.cancel_at = None
                self.batch_faults.append(f"cancel of seed {state.plan.seed} run {state.plan.index} missed: "
                                         f"{exc.message}")

    def _cancel_at_sleeper(self, state: RunState) -> None:
        step = state.plan.by_id.get(state.plan.cancel_at or "")
        if step is None or not step.sleeper or state.cancelled:
            return
        started = self.server.started(state.run_id, step.id)
        if started is None:
            return
        if started.get("ended") is not None:  # the driver was held up past the whole sleep: not "in the middle"
            state.cancelled, state.plan.cancel_at = True, None
            self.batch_faults.append(f"cancel of seed {state.plan.seed} run {state.plan.index} missed: its sleeper "
                                     "ended before the driver saw it start")
            return
        self._cancel(state)

    def _duplicate(self, state: RunState, rows: dict[tuple[str, int], StepRun]) -> None:
        for n, dup in enumerate(state.plan.duplicates):
            if n in state.duplicates_sent:
                continue
            if dup.moment == "started":
                ready = self.server.started(state.run_id, dup.step, dup.item if dup.item >= 0 else None) is not None
            else:
                row = rows.get((dup.step, dup.item))
                ready = row is not None and row.status == "succeeded"
            if ready:
                celery_app().send_task("orchestra.step", args=[state.run_id, dup.step, dup.item], ignore_result=True)
                state.duplicates_sent.add(n)
                self.faults["duplicate"] += 1

    def _flush(self, began: float) -> None:
        from orchestra.waits import recover

        if self.flush_at is None or time.monotonic() - began < self.flush_at:
            return
        self.flush_at = None
        keys.client().flushall()
        recovered = recover()
        self.faults["flushall"] += 1
        self.batch_faults.append(f"FLUSHALL at {time.monotonic() - began:.1f}s, {recovered} waits recovered")

    def _kill_worker(self) -> None:
        """kill -9 the worker running a sleeper, while nothing with a planned trouble runs on it."""
        if self.killed_worker or not self.kill_targets:
            return
        for seed, (index, sleeper) in self.kill_targets:
            state = next(s for s in self.states if s.plan.seed == seed and s.plan.index == index)
            started = self.server.started(state.run_id, sleeper)
            if started is None or started.get("ended") is not None:
                continue
            if time.monotonic() - started["started"] > SLEEPER_SECONDS - 1.0:
                continue  # too close to its end to be sure the kill lands in the middle
            if not self._safe_to_kill(started["ppid"]):
                continue
            self.killed_worker = True
            hit = self.server.mark_killed(started["ppid"])
            if self.workers.kill(started["ppid"]):
                self.faults["kill_worker"] += 1
                self.batch_faults.append(f"kill -9 of worker {started['ppid']} under seed {seed} run {index} "
                                         f"{sleeper} ({hit} executions in flight)")
            return

    def _safe_to_kill(self, pid: int) -> bool:
        """Nothing whose planned outcome counts executions may run on the worker (or be slow on the server)."""
        with self.server.lock:
            busy = [e for e in self.server.executions if e["ended"] is None and e["ppid"] == pid]
            slow_requests = self.server.in_flight
        plans = {(s.run_id, st.id): st for s in self.states for st in s.plan.steps}
        if slow_requests:
            return False
        return all((step := plans.get((e["run"], e["step"]))) is not None and not (
            step.fail_times or step.slow_times or step.kills) for e in busy)

    # -- quiet -------------------------------------------------------------------------------------------------

    def _quiesce(self, timeout: float = 30.0) -> bool:
        """Wait until no message is queued or unacknowledged and nothing executes, five looks in a row."""
        r = keys.client()
        quiet, deadline = 0, time.monotonic() + timeout
        while time.monotonic() < deadline:
            idle = not r.llen("celery") and not r.hlen("unacked") and not self.server.busy()
            quiet = quiet + 1 if idle else 0
            if quiet >= 5:
                return True
            time.sleep(0.2)
        return False
