"""A step call: what the runtime hands a step kind, and what a kind's connectors act for.

``StepCall`` carries the claimed step's rendered ``with``, its context and its
identity (whose ``idempotency_key`` every connector call sends), and its journal:
the audit events its connectors record, written with the step's outcome.
``Park`` is raised to leave the step waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestra.spec import Step, WorkflowSpec


@dataclass(frozen=True)
class StepCall:
    """Everything a step kind may know about the call it is carrying out."""

    run_id: str
    step_id: str
    item: int  # -1 unless this is one item of a for_each
    attempt: int  # 1 on the first try
    spec: WorkflowSpec
    step: Step
    params: dict[str, Any]  # the step's `with`, rendered
    context: dict[str, Any]  # what templates see: input, steps, item, run
    actor: str  # who submitted the run
    execution_id: str  # the StepRun row id
    journal: list[dict[str, Any]] = field(default_factory=list, compare=False)  # events to audit with the outcome

    def record(self, type: str, payload: dict[str, Any]) -> None:
        """Audit ``type`` for this call; written in the transaction that records the step's outcome."""
        body = {**payload, **({"item": self.item} if self.item >= 0 else {}), "attempt": self.attempt}
        self.journal.append({"type": type, "actor": self.actor, "step_id": self.step_id, "payload": body})

    @property
    def idempotency_key(self) -> str:
        """Stable across redeliveries and retries of the same run, step and item."""
        return f"{self.run_id}:{self.step_id}:{self.item}"


@dataclass
class Park(Exception):
    """Raised by a kind to leave its step ``waiting``; the run holds no worker while it waits.

    ``audit`` is recorded as one event of type ``event`` in the same transaction
    that marks the step waiting.
    """

    event: str
    audit: dict[str, Any] = field(default_factory=dict)
    after_commit: Any = None  # a callable run once the waiting state is committed
