"""The compiler: a spec plus a run's recorded state becomes a Celery canvas.

The canvas is a plan, never the only copy of where a run stands. It covers every
step that has not ended, layer by layer in dependency order: one step alone is a
signature, several independent steps are a group, and a group followed by more
work becomes a chord that counts its members in Redis. Each message carries only
(run id, step id, item), never outputs.

A long run is compiled in segments of ``segment_size`` steps. The last task of a
segment (``orchestra.advance``) compiles the next one from the database, so the
first message stays small however long the workflow is (celery/celery#2468).
A canvas whose steps are all placed ends with ``orchestra.finish``.
"""

from __future__ import annotations

from typing import Any

from celery import chain, group
from celery.canvas import Signature
from sqlalchemy import select

from orchestra import db
from orchestra.models import ENDED_STEP, NO_ITEM, TERMINAL_RUN, Run, StepRun, StepStatus
from orchestra.settings import get_settings
from orchestra.spec import WorkflowSpec

STEP_TASK = "orchestra.step"
ADVANCE_TASK = "orchestra.advance"
FINISH_TASK = "orchestra.finish"
COLLECT_TASK = "orchestra.collect"


def celery_app() -> Any:
    """The Celery app in ``workers.app``, imported on first use so the library loads without a broker."""
    from workers.app import app

    return app


def _task(name: str, *args: Any, **options: Any) -> Signature:
    return Signature(name, args=args, options=options, immutable=True, app=celery_app())


def step_signature(spec: WorkflowSpec, run_id: str, step_id: str, item: int = NO_ITEM) -> Signature:
    """One step's message: ids only. Flower shows it as ``<workflow>.<step>``."""
    step = spec.by_id[step_id]
    options: dict[str, Any] = {"shadow": f"{spec.name}.{step_id}" + (f"[{item}]" if item >= 0 else "")}
    if step.timeout and step.kind == "task":
        options["soft_time_limit"] = step.timeout
        options["time_limit"] = step.timeout + 5
    return _task(STEP_TASK, run_id, step_id, item, **options)


def layers(spec: WorkflowSpec, remaining: list[str]) -> list[list[str]]:
    """``remaining`` step ids grouped so each layer depends only on earlier layers."""
    left = set(remaining)
    depth: dict[str, int] = {}
    for sid in spec.order:
        if sid in left:
            needs = [n for n in spec.by_id[sid].needs or [] if n in left]
            depth[sid] = 1 + max((depth[n] for n in needs), default=-1)
    out: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for sid in spec.order:
        if sid in depth:
            out[depth[sid]].append(sid)
    return out


def compile_run(spec: WorkflowSpec, run_id: str, statuses: dict[str, str], segment_size: int | None = None) -> Signature:
    """The canvas for what remains of a run, given each step's recorded status."""
    size = segment_size or get_settings().segment_size
    remaining = [sid for sid in spec.order if statuses.get(sid, StepStatus.pending) not in ENDED_STEP]
    parts: list[Signature] = []
    placed = 0
    plan = layers(spec, remaining)
    for index, layer in enumerate(plan):
        sigs = [step_signature(spec, run_id, sid) for sid in layer]
        # Only a chord's members need their results stored (Redis counts them); a lone step's would be dead weight.
        parts.append(sigs[0].set(ignore_result=True) if len(sigs) == 1 else group(sigs))
        placed += len(sigs)
        if placed >= size and index < len(plan) - 1:
            parts.append(_task(ADVANCE_TASK, run_id, ignore_result=True))
            break
    else:
        last = plan[-1] if plan else []
        if len(last) == 1 and not spec.by_id[last[0]].for_each:
            parts[-1].kwargs["finish"] = True  # the last step ends the run itself: one message fewer
        else:
            parts.append(_task(FINISH_TASK, run_id, ignore_result=True))
    return parts[0] if len(parts) == 1 else chain(*parts)


def is_plain_chain(canvas: Signature) -> bool:
    """True if ``canvas`` is single tasks one after another, with no group or chord.

    Sending such a canvas publishes one message and freezes no group result, so
    it neither subscribes to nor waits on the result backend.
    """
    tasks = canvas.tasks if canvas.task == "celery.chain" else [canvas]
    return all(task.task in (STEP_TASK, ADVANCE_TASK, FINISH_TASK) for task in tasks)


def fanout_canvas(spec: WorkflowSpec, run_id: str, step_id: str, count: int) -> Signature:
    """``count`` item messages in at most ``max_parallel`` lanes, then the collect task."""
    lanes = min(count, spec.by_id[step_id].max_parallel or count)
    lane_sigs = []
    for lane in range(lanes):
        items = [step_signature(spec, run_id, step_id, i) for i in range(lane, count, lanes)]
        for early in items[:-1]:  # only a lane's last item answers to the chord
            early.set(ignore_result=True)
        lane_sigs.append(items[0] if len(items) == 1 else chain(*items))
    collect = _task(COLLECT_TASK, run_id, step_id)
    return chain(group(lane_sigs), collect)


def dispatch_run(run_id: str) -> None:
    """Compile what remains of ``run_id`` from the database and send it to the workers; an ended run is left be."""
    from orchestra.workflows import get_workflow

    with db.read_session() as session:
        found = session.execute(select(Run.workflow, Run.version, Run.status).where(Run.id == run_id)).first()
        if found is None or found.status in TERMINAL_RUN:
            return
        rows = session.execute(
            select(StepRun.step_id, StepRun.status).where(StepRun.run_id == run_id, StepRun.item == NO_ITEM)
        ).all()
    spec = get_workflow(found.workflow, found.version)
    compile_run(spec, run_id, {sid: status for sid, status in rows}).apply_async()
