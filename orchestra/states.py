"""The states of runs, steps and human tasks: plain enums, importable without a database."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    pending = "pending"  # recorded, not yet picked up by a worker
    running = "running"  # at least one step has started
    waiting = "waiting"  # parked on a person or a signal; holds no worker
    succeeded = "succeeded"  # every step ended succeeded or skipped
    failed = "failed"  # a step failed after its last attempt
    cancelled = "cancelled"  # stopped by a person


class StepStatus(str, Enum):
    pending = "pending"  # not started; its needs may not be met yet
    running = "running"  # held by a worker under a lease
    waiting = "waiting"  # parked on a person or a signal
    succeeded = "succeeded"  # output recorded; never executed again
    failed = "failed"  # last attempt failed
    skipped = "skipped"  # its `if` was false
    cancelled = "cancelled"  # its run was cancelled


TERMINAL_RUN = frozenset({RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled})
DONE_STEP = frozenset({StepStatus.succeeded, StepStatus.skipped})  # a need that is met
ENDED_STEP = frozenset({StepStatus.succeeded, StepStatus.skipped, StepStatus.failed, StepStatus.cancelled})

# The whole step row when a step has no fan-out; the parent row of a fan-out.
NO_ITEM = -1


class TaskStatus(str, Enum):
    open = "open"  # waiting for a decision
    approved = "approved"  # decided: approve (by a person, a quorum or an escalation action)
    rejected = "rejected"  # decided: reject
    expired = "expired"  # its deadline ended it without a decision (timeout or `action: fail`)
    cancelled = "cancelled"  # its run was cancelled, or a newer attempt of the step replaced it
