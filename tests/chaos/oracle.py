"""The oracle: what each generated run must end as, and the invariants every run must keep.

``predict`` reads only the plan (the workflow and its faults). ``check`` reads
what happened: the results database, the audit trail, Redis and the effects
server's record. The semantics predicted are the runtime's target ones:

- a step that raises fails after ``retry.attempts`` attempts; one that fails
  fewer times than its attempts succeeds, and a retried item gets its own item;
- a step whose ``timeout`` passes fails with a StepTimeout that follows its
  retry policy;
- a worker killed under a step: the step is re-claimed and runs again; one that
  kills its worker every time is abandoned after ORCHESTRA_MAX_RECOVERIES (3)
  lease lapses (the step fails, audited ``step.abandoned``);
- a failed item fails its parent and the run; when a run ends failed or
  cancelled, every row still ``running`` or ``waiting`` becomes ``cancelled``,
  and on cancel ``pending`` rows too;
- a cancelled run starts no later step;
- duplicates, a lost Redis (FLUSHALL then ``recover``), rate-limit hold-backs
  and a kill -9 of a worker change nothing a run ends as.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from orchestra import db, keys
from orchestra.audit import list_events, verify_chain
from orchestra.models import HumanTask, Run, SignalWait, StepRun
from tests.chaos.effects import EffectsServer
from tests.chaos.generator import ALWAYS, RunPlan, StepPlan, signal_payload

NO_ITEM = -1
MAX_DETAIL = 400
SHOWN = 3
INVARIANTS = ("final_state", "effect_once", "own_item", "no_open_rows", "fanout_agrees", "audit", "redis_waits")


@dataclass
class Violation:
    seed: int
    run: int
    run_id: str
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"seed {self.seed} run {self.run} ({self.run_id}) {self.invariant}: {self.detail}"


def predict(run: RunPlan) -> str:
    """The status the run must end with once the driver has decided and signalled everything it waits for."""
    if run.cancel_at is not None:
        return "cancelled"
    if any(s.must_fail for s in run.steps):
        return "failed"
    return "succeeded"


def expected_output(s: StepPlan, index: int) -> Any:
    """A succeeded task's output for item ``index`` (-1: the step), as tasks/chaos.py returns it."""
    if s.items:
        return {"value": s.items[index], "item": s.items[index]}
    return {"value": f"v-{s.id}", "item": None}


class Check:
    """The invariants of one ended (or timed-out) run."""

    def __init__(self, plan: RunPlan, run_id: str, server: EffectsServer, observed: dict[str, Any]) -> None:
        self.plan, self.run_id, self.server, self.observed = plan, run_id, server, observed
        self.found: list[Violation] = []
        with db.read_session() as session:
            self.run = session.get(Run, run_id)
            rows = list(session.scalars(select(StepRun).where(StepRun.run_id == run_id)))
            self.events = list_events(session, run_id)
            self.tasks = [tuple(t) for t in session.execute(
                select(HumanTask.id, HumanTask.row_id, HumanTask.title).where(HumanTask.run_id == run_id))]
            self.wait_ids = [t[0] for t in self.tasks] + list(
                session.scalars(select(SignalWait.id).where(SignalWait.run_id == run_id)))
        assert self.run is not None, f"run {run_id} is not in the database"
        self.rows = {(r.step_id, r.item): r for r in rows}
        self.items = defaultdict(list)
        for r in rows:
            if r.item >= 0:
                self.items[r.step_id].append(r)

    def fail(self, invariant: str, detail: str) -> None:
        self.found.append(Violation(self.plan.seed, self.plan.index, self.run_id, invariant,
                                    detail if len(detail) <= MAX_DETAIL else detail[:MAX_DETAIL] + "..."))

    def all(self) -> list[Violation]:
        """Every violation, at most ``SHOWN`` per invariant (the last one says how many more there were)."""
        for invariant in (self.final_state, self.effect_once, self.own_item, self.no_open_rows, self.fanout_agrees,
                          self.audit, self.redis_waits):
            before = len(self.found)
            invariant()
            extra = self.found[before + SHOWN:]
            if extra:
                del self.found[before + SHOWN:]
                self.found[-1].detail += f" (and {len(extra)} more {extra[0].invariant} violations in this run)"
        return self.found

    # -- every run reaches the final state the oracle predicts ------------------------------------------------

    def final_state(self) -> None:
        want, got = predict(self.plan), self.run.status
        if got not in ("succeeded", "failed", "cancelled"):
            self.fail("final_state", f"did not end within {self.observed.get('deadline', '?')}s: still {got}, "
                                     f"predicted {want}: " + self._why(want))
            return
        if got != want:
            self.fail("final_state", f"run ended {got} (error: {self.run.error}), predicted {want}: "
                                     + self._why(want))
            return
        if want == "succeeded":
            for s in self.plan.steps:
                self._succeeded_step(s)
        elif want == "failed":
            failed = {sid for (sid, item), r in self.rows.items() if item == NO_ITEM and r.status == "failed"}
            allowed = {s.id for s in self.plan.steps if s.must_fail}
            if not failed & allowed:
                self.fail("final_state", f"run failed but none of the steps that must fail did ({sorted(allowed)}); "
                                         f"failed: {sorted(failed)}")
            if failed - allowed:
                self.fail("final_state", f"steps {sorted(failed - allowed)} failed, which the plan does not fail; "
                                         + "; ".join(f"{sid}: {self.rows[(sid, NO_ITEM)].error}"
                                                     for sid in sorted(failed - allowed)))
            for s in self.plan.steps:
                for r in self.items.get(s.id, []):
                    if r.status == "failed" and not s.fails_item(r.item):
                        self.fail("final_state", f"item {s.id}[{r.item}] failed, which the plan does not fail: "
                                                 f"{r.error}")
            for s in self.plan.steps:
                row = self.rows.get((s.id, NO_ITEM))
                if s.kills == ALWAYS and row is not None and row.status == "failed":
                    if not any(e.type == "step.abandoned" and e.step_id == s.id for e in self.events):
                        self.fail("final_state", f"{s.id} kills its worker every time and failed, but no "
                                                 "step.abandoned event was audited")

    def _why(self, want: str) -> str:
        """Which planned steps the prediction rests on, and what became of them."""
        def status(sid: str) -> str:
            row = self.rows.get((sid, NO_ITEM))
            return f"{row.status}" + (f" ({row.error})" if row is not None and row.error else "") if row else "no row"

        if want == "failed":
            return "; ".join(f"{s.id} must fail ({_trouble(s)}) but is {status(s.id)}{self._history(s.id)}"
                             for s in self.plan.steps if s.must_fail)
        if want == "cancelled":
            return f"cancel planned at {self.plan.cancel_at}, which is {status(self.plan.cancel_at or '')}"
        failed = [(sid, item, r) for (sid, item), r in sorted(self.rows.items()) if r.status == "failed"]
        return "; ".join(f"{sid}{f'[{item}]' if item >= 0 else ''} ({_trouble(self.plan.by_id[sid])}) failed: "
                         f"{r.error}{self._history(sid, item)}" for sid, item, r in failed) or "no step failed"

    def _history(self, sid: str, item: int | None = None) -> str:
        """What the effects server saw of a step: each execution or request, its number, outcome and time."""
        seen = [f"#{e['n']}[{e['item']}] {e['outcome']} {((e['ended'] or e['started']) - e['started']):.1f}s"
                for e in self.server.executions_of(self.run_id)
                if e["step"] == sid and (item is None or item < 0 or e["item"] == item)]
        seen += [f"request #{r['n']} {r['key'].rsplit(':', 1)[1]}" for r in self.server.requests_of(self.run_id)
                 if r["key"].split(":")[1] == sid]
        return f" [seen: {', '.join(seen[:8])}]" if seen else " [never executed]"

    def _succeeded_step(self, s: StepPlan) -> None:
        row = self.rows.get((s.id, NO_ITEM))
        if row is None:
            self.fail("final_state", f"step {s.id} has no row")
            return
        if s.when is False:
            if row.status != "skipped":
                self.fail("final_state", f"{s.id}'s `if` is false but it ended {row.status}")
            ran = [e for e in self.server.executions_of(self.run_id) if e["step"] == s.id]
            ran += [r for r in self.server.requests_of(self.run_id) if r["key"].split(":")[1] == s.id]
            if ran:
                self.fail("final_state", f"{s.id} was skipped but executed {len(ran)} times")
            return
        if row.status != "succeeded":
            self.fail("final_state", f"step {s.id} ended {row.status} ({row.error}), predicted succeeded")
            return
        targets = [(i, r) for i, r in enumerate(sorted(self.items.get(s.id, []), key=lambda r: r.item))] \
            if s.items else [(NO_ITEM, row)]
        if s.items and len(targets) != len(s.items):
            self.fail("final_state", f"{s.id} has {len(targets)} item rows for {len(s.items)} items")
        for index, r in targets:
            label = f"{s.id}[{index}]" if index >= 0 else s.id
            if r.status != "succeeded":
                self.fail("final_state", f"{label} ended {r.status}, predicted succeeded")
            elif s.kind == "task" and r.output != expected_output(s, index):
                self.fail("final_state", f"{label} output {r.output!r}, predicted {expected_output(s, index)!r}")
            elif s.kind == "human":
                decision = s.decisions[max(index, 0)]
                if not isinstance(r.output, dict) or r.output.get("decision") != decision:
                    self.fail("final_state", f"{label} output {r.output!r}, predicted decision {decision}")
            elif s.kind == "signal" and r.output != signal_payload(s.id):
                self.fail("final_state", f"{label} output {r.output!r}, predicted {signal_payload(s.id)!r}")
        if s.items and row.status == "succeeded":
            outputs = [r.output for _, r in targets]
            if row.output != outputs:
                self.fail("final_state", f"fan-out {s.id}'s output {row.output!r} is not its items' {outputs!r}")

    # -- each succeeded step's side effect happened exactly once -------------------------------------------------

    def effect_once(self) -> None:
        requests = self.server.requests_of(self.run_id)
        by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in requests:
            by_key[r["key"]].append(r)
        plans = self.plan.by_id
        for key, sent in by_key.items():
            bodies = {repr(r["body"]) for r in sent}
            if len(bodies) > 1:
                self.fail("effect_once", f"{len(sent)} requests under Idempotency-Key {key} carried "
                                         f"{len(bodies)} different bodies: {sorted(bodies)[:3]}")
            _, sid, item = key.split(":")
            s = plans.get(sid)
            if s is None or s.kind != "http" or int(item) not in (range(len(s.items)) if s.items else [NO_ITEM]):
                self.fail("effect_once", f"Idempotency-Key {key} names no http step or item of the run")
        for s in self.plan.steps:
            for (sid, item), r in self.rows.items():
                if sid != s.id or r.status != "succeeded" or (s.items and item == NO_ITEM):
                    continue
                label = f"{sid}[{item}]" if item >= 0 else sid
                if s.kind == "http":
                    key = f"{self.run_id}:{sid}:{item}"
                    if self.server.http_effects[key] != 1:
                        self.fail("effect_once", f"{label} succeeded but the server applied "
                                                 f"{self.server.http_effects[key]} effects under {key}")
                elif s.kind == "task":
                    count = self.server.task_effect_count(self.run_id, sid, item)
                    if count != 1:
                        self.fail("effect_once", f"{label} succeeded but its effect was recorded {count} times")

    # -- every item ran with its own item ------------------------------------------------------------------------

    def own_item(self) -> None:
        plans = self.plan.by_id
        for e in self.server.executions_of(self.run_id):
            s = plans.get(e["step"])
            if s is None or not s.items:
                continue
            want = s.items[e["item"]]
            if e["item_value"] != want or e["value"] != want:
                self.fail("own_item", f"{s.id}[{e['item']}] execution {e['n']} (attempt {e['attempt']}) ran with "
                                      f"item {e['item_value']!r} and value {e['value']!r}, not {want!r}")
        for r in self.server.requests_of(self.run_id):
            _, sid, item = r["key"].split(":")
            s = plans.get(sid)
            if s is None or not s.items:
                continue
            want = s.items[int(item)]
            got = r["body"].get("item") if isinstance(r["body"], dict) else r["body"]
            if got != want:
                self.fail("own_item", f"{sid}[{item}] request {r['n']} sent item {got!r}, not {want!r}")
        for task_id, row_id, title in self.tasks:
            row = next((r for r in self.rows.values() if r.id == row_id), None)
            s = plans.get(row.step_id) if row is not None else None
            if row is None or s is None or not s.items or row.item < 0:
                continue
            want = f"chaos {s.id} {s.items[row.item]}"
            if title != want:
                self.fail("own_item", f"human item {s.id}[{row.item}]'s task {task_id} is titled {title!r}, "
                                      f"not {want!r}")

    # -- no step or item row is running or waiting once its run has ended ------------------------------------

    def no_open_rows(self) -> None:
        status = self.run.status
        if status not in ("succeeded", "failed", "cancelled"):
            return  # final_state reports a run that did not end
        banned = {"running", "waiting"} | ({"pending"} if status in ("succeeded", "cancelled") else set())
        for (sid, item), r in sorted(self.rows.items()):
            if r.status in banned:
                label = f"{sid}[{item}]" if item >= 0 else sid
                self.fail("no_open_rows", f"{label} is {r.status} although the run ended {status}")

    # -- a fan-out parent's status agrees with its items --------------------------------------------------------

    def fanout_agrees(self) -> None:
        for s in self.plan.steps:
            parent = self.rows.get((s.id, NO_ITEM))
            items = self.items.get(s.id, [])
            if not s.items or parent is None or not items:
                continue
            statuses = sorted({r.status for r in items})
            if "failed" in statuses and parent.status != "failed":
                self.fail("fanout_agrees", f"an item of {s.id} failed but the parent is {parent.status} "
                                           f"(items: {statuses})")
            if parent.status == "succeeded" and statuses != ["succeeded"]:
                self.fail("fanout_agrees", f"{s.id} succeeded but its items are {statuses}")

    # -- every audit chain verifies; after run.cancelled no step.started follows ----------------------------

    def audit(self) -> None:
        result = verify_chain(self.events, self.run.audit_hash)
        if not result.verified:
            self.fail("audit", f"the chain does not verify: {result.reason}")
        cancelled = next((e.seq for e in self.events if e.type == "run.cancelled"), None)
        if cancelled is not None:
            late = [f"{e.step_id}@{e.seq}" for e in self.events if e.seq > cancelled and e.type == "step.started"]
            if late:
                self.fail("audit", f"step.started after run.cancelled (seq {cancelled}): {late}")

    # -- nothing waits in Redis for an ended run -----------------------------------------------------------

    def redis_waits(self) -> None:
        if self.run.status not in ("succeeded", "failed", "cancelled"):
            return
        r = keys.client()
        left = [w for w in self.wait_ids if r.exists(keys.WAIT + w)]
        due = [w for w in self.wait_ids if r.zscore(keys.DEADLINES, w) is not None]
        stray = [k for k in r.scan_iter(keys.WAIT + "*", count=1000)
                 if r.type(k) == "hash" and r.hget(k, "r") == self.run_id and k.removeprefix(keys.WAIT) not in left]
        if left or due or stray:
            self.fail("redis_waits", f"the run ended {self.run.status} but Redis still holds waits {left + stray} "
                                     f"and deadlines {due}")


def _trouble(s: StepPlan) -> str:
    kind = s.kind + (f" for_each {len(s.items)}" if s.items else "")
    if s.kind == "human":
        return f"{kind}, decisions {s.decisions}, on_reject {s.on_reject}"
    parts = [f"attempts {s.attempts}"]
    if s.fail_times:
        parts.append(f"fails {s.fail_times}x")
    if s.slow_times:
        parts.append(f"overruns timeout {s.timeout}s {s.slow_times}x")
    if s.kills:
        parts.append("kills its worker " + ("every time" if s.kills == ALWAYS else f"{s.kills}x"))
    return f"{kind}, " + ", ".join(parts)


def check(plan: RunPlan, run_id: str, server: EffectsServer, observed: dict[str, Any]) -> list[Violation]:
    return Check(plan, run_id, server, observed).all()
