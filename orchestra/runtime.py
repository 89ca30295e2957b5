"""The step runtime: the Celery tasks that carry out a compiled run.

``orchestra.step`` runs one step (or one item of a fan-out) in three moves:

1. ``transitions.claim`` — one transaction: check the run and the step's needs,
   evaluate ``if``, render ``with``, mark the step running under a lease, audit it.
   A step already recorded as succeeded is never executed again; a message for a
   step whose needs are not met, or whose lease another live worker holds, does
   nothing; a step whose worker died ``max_recoveries`` times is abandoned.
2. the step kind runs (``orchestra.steps``), with the lease renewed by heartbeats
   up to its timeout.
3. ``transitions.succeed`` / ``retry`` / ``hold_back`` / ``park`` / ``fail`` — one
   transaction, which also writes what the step's connectors audited.

This module decides which outcome a step had (the retry policy, timeouts,
hold-backs); ``orchestra.transitions`` writes it. A step that fails for good ends
its Celery task in the FAILURE state, so Flower shows what the database says.

``orchestra.collect`` joins a fan-out, ``orchestra.advance`` compiles the next
segment, and ``orchestra.finish`` ends the run once every step has ended (the last
step of a canvas does that itself when it can, saving a message).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from orchestra import broker, leases, transitions, waits
from orchestra.compiler import HARD_LIMIT_GRACE, fanout_canvas
from orchestra.errors import OrchestraError, StepError, StepTimeout
from orchestra.models import NO_ITEM
from orchestra.redact import redact_text
from orchestra.steps.base import Park, StepCall
from orchestra.steps.kinds import get_kind
from orchestra.transitions import Claim, Outcome

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 1_000_000


class StepFailed(StepError):
    """Raised from the Celery task once a step's failure is recorded, so Celery (and Flower) say FAILURE."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, OrchestraError):
        return redact_text(exc.message)
    return redact_text(f"{type(exc).__name__}: {exc}")


def _serialisable(output: Any) -> Any:
    try:
        # NaN and Infinity are not JSON, and an unpaired surrogate is not text: PostgreSQL refuses all three.
        text = json.dumps(output, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise StepError(f"the step returned something that is not JSON ({exc}); return dicts, lists, str, "
                        "numbers, bools or None", retryable=False) from exc
    if len(text) > MAX_OUTPUT_BYTES:
        raise StepError(f"the step's output is {len(text)} bytes, over the {MAX_OUTPUT_BYTES} byte limit; "
                        "store large data elsewhere and return a reference", retryable=False)
    return output


def _call(claim: Claim) -> StepCall:
    assert claim.row is not None and claim.run is not None and claim.spec is not None
    step = claim.spec.by_id[claim.row.step_id]
    return StepCall(run_id=claim.run.id, step_id=step.id, item=claim.row.item, attempt=claim.row.attempts,
                    spec=claim.spec, step=step, params=claim.params, context=claim.context,
                    actor=claim.run.submitted_by, execution_id=claim.row.id)


def execute(task: Task, claim: Claim, finish: bool = False) -> bool:
    """Run a claimed step and record what happened. True if it succeeded and that was recorded."""
    call = _call(claim)
    timeout = call.step.timeout if call.step.kind not in ("human", "signal") else None
    leases.hold(call.execution_id, claim.token, None if timeout is None else timeout + HARD_LIMIT_GRACE)
    lost = False
    try:
        output = _serialisable(get_kind(call.step.kind).execute(call))
    except Park as park:
        lost = leases.release(call.execution_id)
        if not lost and transitions.park(call.run_id, call.execution_id, claim.token, park.event, park.audit,
                                         call.journal) and park.after_commit is not None:
            park.after_commit()
        return False
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, typed or not
        lost = leases.release(call.execution_id)
        if lost:
            log.info("step %s of run %s stopped: its lease was taken away (cancelled?)", call.step_id, call.run_id)
            return False
        _handle_failure(task, call, claim.token, exc)
        return False
    finally:
        if not lost:
            leases.release(call.execution_id)
    return transitions.succeed(claim, output, call.journal, finish_run=finish)


def _handle_failure(task: Task, call: StepCall, token: str, exc: BaseException) -> None:
    if isinstance(exc, SoftTimeLimitExceeded):
        exc = StepTimeout(f"step {call.step_id} ran past its timeout of {call.step.timeout:g}s and was stopped; "
                          "raise its `timeout` or make it faster")
    held_back = getattr(exc, "retry_after", None)
    if held_back is not None and getattr(exc, "retryable", False) and getattr(exc, "holds_back", False):
        if transitions.hold_back(call.run_id, call.execution_id, token, float(held_back), call.journal):
            raise task.retry(countdown=float(held_back), max_retries=None)
        return
    retryable = exc.retryable if isinstance(exc, OrchestraError) else True
    if retryable and call.attempt < call.step.retry.attempts:
        delay = call.step.retry.delay(call.attempt)
        if held_back is not None:
            delay = max(delay, float(held_back))
        if transitions.retry_step(call.run_id, call.execution_id, token, describe(exc), delay, call.journal):
            raise task.retry(countdown=delay, max_retries=None)
        return
    message = describe(exc)
    log.info("step %s of run %s failed: %s", call.step_id, call.run_id, message)
    closed = transitions.fail(call.run_id, call.execution_id, token, message, call.journal)
    if closed is None:
        return
    waits.drop_waits(closed)
    raise StepFailed(f"step {call.step_id}" + (f"[{call.item}]" if call.item >= 0 else "") + f" failed: {message}")


@shared_task(name="orchestra.step", bind=True, acks_late=True, max_retries=None)
def run_step(self: Task, run_id: str, step_id: str, item: int = NO_ITEM, finish: bool = False) -> None:
    """Run one step (or one fan-out item) of a run. Safe to deliver more than once.

    ``finish`` marks the canvas's last step, which then ends the run itself:
    in the transaction that records its output when it succeeds.
    """
    claim = transitions.claim(run_id, step_id, item)
    waits.drop_waits(claim.closed_waits)
    if claim.outcome == Outcome.RUN and execute(self, claim, finish=finish):
        return
    if claim.outcome == Outcome.FANOUT:
        assert claim.spec is not None
        raise self.replace(fanout_canvas(claim.spec, run_id, step_id, claim.items, app=self.app))
    if finish:
        transitions.finish_run(run_id)


@shared_task(name="orchestra.collect", acks_late=True)
def collect_fanout(run_id: str, step_id: str) -> None:
    """Join a fan-out: the parent step succeeds with its items' outputs, in order."""
    transitions.collect(run_id, step_id)


@shared_task(name="orchestra.advance", acks_late=True)
def advance_run(run_id: str) -> None:
    """End of a segment, or a run handed over by ``broker.enqueue``: compile and send what remains."""
    broker.dispatch_run(run_id)


@shared_task(name="orchestra.finish", acks_late=True)
def finish_run(run_id: str) -> None:
    """End the run if every step has ended; otherwise leave it to whoever finishes last."""
    transitions.finish_run(run_id)


__all__ = ["run_step", "collect_fanout", "advance_run", "finish_run", "StepFailed"]
