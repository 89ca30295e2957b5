"""What a step kind is: the code that carries out one ``uses:``.

The step runtime (``orchestra.runtime``) claims a step, renders its ``with``,
and hands a ``StepCall`` to the kind named by ``uses``. A kind returns the
step's output (JSON-serialisable), raises an ``OrchestraError`` (``retryable``
decides whether the runtime tries again), or raises ``Park`` to leave the step
waiting on a person or a signal.
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


class StepKind:
    """Base class of the step kinds. Subclasses set ``name`` and implement ``execute``."""

    name: str = ""

    def execute(self, call: StepCall) -> Any:
        raise NotImplementedError


_KINDS: dict[str, StepKind] = {}


def register_kind(kind: StepKind) -> StepKind:
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> StepKind:
    from orchestra import steps  # noqa: F401 - registers the built-in kinds

    try:
        return _KINDS[name]
    except KeyError:
        from orchestra.errors import StepError

        raise StepError(f"step kind '{name}' is not available in this worker; install its module", retryable=False) from None
