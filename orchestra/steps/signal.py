"""``uses: signal``: park the run until an external event (a payment webhook, say) arrives.

``with: {name, schema?, timeout?}``. A signal that was delivered before the step
parked is waiting in the ``signals`` table and is consumed at once; otherwise
the step records a signal wait and parks. ``orchestra.signals.deliver_signal``
resumes it with the signal's payload as the step's output.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from orchestra import db, transitions
from orchestra.errors import StepError
from orchestra.ids import new_id
from orchestra.models import TERMINAL_RUN, Signal, SignalWait, TaskStatus, utcnow
from orchestra.spec import parse_duration
from orchestra.steps.base import Park, StepCall, StepKind


def _take_buffered(session: Any, run_id: str, name: str, wait_id: str | None) -> Signal | None:
    """The oldest unconsumed signal ``name`` of the run, marked consumed."""
    found = session.scalars(select(Signal).where(Signal.run_id == run_id, Signal.name == name,
                                                 Signal.consumed_at.is_(None)).order_by(Signal.received_at)).first()
    if found is not None:
        found.consumed_at, found.wait_id = utcnow(), wait_id
    return found


def open_wait(call: StepCall) -> tuple[SignalWait | None, Any]:
    """Consume an early signal (returns ``(None, payload)``) or record a wait (returns ``(wait, None)``)."""
    name = str(call.params["name"])
    timeout = call.params.get("timeout", call.step.timeout)
    now = utcnow()
    with db.write_session() as session:
        tx = transitions.within(session)
        run = transitions.lock_run(tx, call.run_id)
        if run is None or run.status in TERMINAL_RUN:
            raise StepError(f"run {call.run_id} ended before its signal step parked", retryable=False)
        early = _take_buffered(session, call.run_id, name, None)
        if early is not None:
            transitions.note(transitions.within(session), run, "signal.consumed", step_id=call.step_id,
                             payload={"name": name, "signal_id": early.id, "early": True})
            return None, early.payload
        wait = session.scalars(select(SignalWait).where(SignalWait.row_id == call.execution_id,
                                                        SignalWait.attempt == call.attempt)).first()
        if wait is None:
            wait = SignalWait(id=new_id(), run_id=call.run_id, step_id=call.step_id, row_id=call.execution_id,
                              attempt=call.attempt, name=name, status=TaskStatus.open.value, created_at=now,
                              deadline=now + timedelta(seconds=parse_duration(timeout)) if timeout is not None else None)
            session.add(wait)
    return wait, None


def settle_parked(wait: SignalWait) -> None:
    """After the park commits: write the Redis wait, then take a signal that raced the park."""
    from orchestra import signals, waits

    waits.store_wait(wait.id, waits.SIGNAL, wait.run_id, wait.step_id, deadline=wait.deadline)
    signals.consume_buffered(wait.id)


class SignalKind(StepKind):
    name = "signal"

    def execute(self, call: StepCall) -> Any:
        wait, payload = open_wait(call)
        if wait is None:
            return payload
        raise Park("signal.waiting", audit={
            "wait_id": wait.id, "name": wait.name, "deadline": wait.deadline.isoformat() if wait.deadline else None,
        }, after_commit=lambda: settle_parked(wait))

