"""The compiler: a spec plus a run's recorded state becomes a Celery canvas.

The canvas is a plan, never the only copy of where a run stands. It covers every
step that has not ended, as a series of parts in dependency order (``plan``). A
part is one step alone (a signature) or independent lanes side by side (a group
whose members are single steps or chains of them), so a step waits only for its
own needs. A group followed by more work becomes a chord that counts its members
in Redis. What does not split that way without nesting a group inside a chord's
member is compiled by dependency ``layers``. Each message carries only (run id,
step id, item), never outputs.

A long run is compiled in segments of ``segment_size`` steps. The last task of a
segment (``orchestra.advance``) compiles the next one from the database, so the
first message stays small however long the workflow is (celery/celery#2468).
A canvas whose steps are all placed ends with ``orchestra.finish``.
"""

from __future__ import annotations

from typing import Any

from celery import chain, group
from celery.canvas import Signature

from orchestra.states import ENDED_STEP, NO_ITEM, StepStatus
from orchestra.settings import get_settings
from orchestra.spec import WorkflowSpec

STEP_TASK = "orchestra.step"
ADVANCE_TASK = "orchestra.advance"
FINISH_TASK = "orchestra.finish"
COLLECT_TASK = "orchestra.collect"


WAIT_KINDS = frozenset({"human", "signal"})  # their `timeout` bounds the wait, not a worker's time
HARD_LIMIT_GRACE = 5.0  # seconds past a step's timeout before Celery kills the child process outright


def _task(name: str, *args: Any, app: Any = None, **options: Any) -> Signature:
    return Signature(name, args=args, options=options, immutable=True, app=app)


def step_signature(spec: WorkflowSpec, run_id: str, step_id: str, item: int = NO_ITEM, app: Any = None) -> Signature:
    """One step's message: ids only. Flower shows it as ``<workflow>.<step>``.

    A step with a ``timeout`` gets it as Celery's soft time limit, whatever its kind:
    the runtime turns the interrupt into a ``StepTimeout`` that follows the retry policy,
    and a step that ignores it is killed ``HARD_LIMIT_GRACE`` seconds later.
    """
    step = spec.by_id[step_id]
    options: dict[str, Any] = {"shadow": f"{spec.name}.{step_id}" + (f"[{item}]" if item >= 0 else "")}
    if step.timeout and step.kind not in WAIT_KINDS:
        options["soft_time_limit"] = step.timeout
        options["time_limit"] = step.timeout + HARD_LIMIT_GRACE
    return _task(STEP_TASK, run_id, step_id, item, app=app, **options)


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


Lane = list[str]
"""Step ids run one after another: a lone signature, or a chain."""
Part = list[Lane]
"""Lanes run side by side: one lane of one step is a lone signature, several lanes a group."""


def _needs_within(spec: WorkflowSpec, block: list[str]) -> dict[str, list[str]]:
    inside = set(block)
    return {sid: [n for n in spec.by_id[sid].needs or [] if n in inside] for sid in block}


def components(spec: WorkflowSpec, block: list[str]) -> list[list[str]]:
    """``block``'s weakly connected components through ``needs``, each in ``block``'s order."""
    root = {sid: sid for sid in block}

    def find(sid: str) -> str:
        while root[sid] != sid:
            root[sid] = root[root[sid]]
            sid = root[sid]
        return sid

    for sid, needs in _needs_within(spec, block).items():
        for need in needs:
            root[find(sid)] = find(need)
    found: dict[str, list[str]] = {}
    for sid in block:
        found.setdefault(find(sid), []).append(sid)
    return list(found.values())


def series(spec: WorkflowSpec, block: list[str]) -> list[list[str]]:
    """``block``, in topological order, cut into pieces that run one after another.

    A cut after a prefix is valid when every later step depends, directly or
    through others, on every step of the prefix (it is enough that the later steps
    with no need outside the prefix depend on its sinks). Such a prefix of one
    topological order is a prefix of all, and every valid cut is taken, so no
    piece can be cut again.
    """
    if not block:
        return []
    at = {sid: i for i, sid in enumerate(block)}
    above: list[int] = []  # bit i: the step depends on block[i]
    for needs in _needs_within(spec, block).values():
        mask = 0
        for need in needs:
            mask |= above[at[need]] | 1 << at[need]
        above.append(mask)
    cuts, common = [len(block)], -1
    for k in range(len(block) - 1, 0, -1):
        common &= above[k]  # what block[k:] all depend on
        prefix = (1 << k) - 1
        if common & prefix == prefix:
            cuts.append(k)
    cuts.append(0)
    cuts.reverse()
    return [block[a:b] for a, b in zip(cuts, cuts[1:])]


def _side_by_side(spec: WorkflowSpec, piece: list[str], longest: int) -> list[Part]:
    """A piece no cut splits: lanes when its components are chains no longer than ``longest``, else its layers.

    A lane never holds a group: chords whose members end in groups are where
    Celery goes wrong, and a lane is one message carrying the rest of its chain.
    """
    lanes = components(spec, piece)
    if len(lanes) > 1 and all(len(lane) <= longest and len(series(spec, lane)) == len(lane) for lane in lanes):
        return [lanes]
    return [[[sid] for sid in layer] for layer in layers(spec, piece)]


def plan(spec: WorkflowSpec, remaining: list[str], longest: int) -> list[Part]:
    """``remaining`` step ids (in ``spec.order``) as parts run one after another; no lane exceeds ``longest``."""
    parts: list[Part] = []
    for piece in series(spec, remaining):
        parts.extend([[piece]] if len(piece) == 1 else _side_by_side(spec, piece, longest))
    return parts


def _lane(sigs: list[Signature], app: Any) -> Signature:
    """Signatures one after another, as a group member: only the last answers to the chord."""
    for early in sigs[:-1]:
        early.set(ignore_result=True)
    return sigs[0] if len(sigs) == 1 else chain(*sigs)


def _part_canvas(spec: WorkflowSpec, run_id: str, part: Part, app: Any) -> Signature:
    if len(part) == 1:
        (sid,) = part[0]
        # Only a chord's members need their results stored (Redis counts them); a lone step's would be dead weight.
        return step_signature(spec, run_id, sid, app=app).set(ignore_result=True)
    return group([_lane([step_signature(spec, run_id, sid, app=app) for sid in lane], app) for lane in part], app=app)


def compile_run(spec: WorkflowSpec, run_id: str, statuses: dict[str, str], segment_size: int | None = None,
                app: Any = None) -> Signature:
    """The canvas for what remains of a run, given each step's recorded status (``app``: the Celery app its signatures use; ``|`` carries it to chains and chords)."""
    size = segment_size or get_settings().segment_size
    remaining = [sid for sid in spec.order if statuses.get(sid, StepStatus.pending) not in ENDED_STEP]
    parts: list[Signature] = []
    placed = 0
    planned = plan(spec, remaining, longest=size)
    for index, part in enumerate(planned):
        parts.append(_part_canvas(spec, run_id, part, app))
        placed += sum(len(lane) for lane in part)
        if placed >= size and index < len(planned) - 1:
            parts.append(_task(ADVANCE_TASK, run_id, app=app, ignore_result=True))
            break
    else:
        last = planned[-1] if planned else []
        if len(last) == 1 and not spec.by_id[last[0][0]].for_each:
            parts[-1].kwargs["finish"] = True  # the last step ends the run itself: one message fewer
        else:
            parts.append(_task(FINISH_TASK, run_id, app=app, ignore_result=True))
    return parts[0] if len(parts) == 1 else chain(*parts)


def is_plain_chain(canvas: Signature) -> bool:
    """True if ``canvas`` is single tasks one after another, with no group or chord.

    Sending such a canvas publishes one message and freezes no group result, so
    it neither subscribes to nor waits on the result backend.
    """
    tasks = canvas.tasks if canvas.task == "celery.chain" else [canvas]
    return all(task.task in (STEP_TASK, ADVANCE_TASK, FINISH_TASK) for task in tasks)


def fanout_canvas(spec: WorkflowSpec, run_id: str, step_id: str, count: int, app: Any = None) -> Signature:
    """``count`` item messages in at most ``max_parallel`` lanes, then the collect task."""
    lanes = min(count, spec.by_id[step_id].max_parallel or count)
    lane_sigs = [_lane([step_signature(spec, run_id, step_id, i, app=app) for i in range(lane, count, lanes)], app)
                 for lane in range(lanes)]
    collect = _task(COLLECT_TASK, run_id, step_id, app=app)
    return chain(group(lane_sigs, app=app), collect)
