"""What a step kind is: the code that carries out one ``uses:``.

The step runtime (``orchestra.runtime``) claims a step, renders its ``with``,
and hands a ``StepCall`` to the kind named by ``uses``. A kind returns the
step's output (JSON-serialisable), raises an ``OrchestraError`` (``retryable``
decides whether the runtime tries again), or raises ``Park`` to leave the step
waiting on a person or a signal.
"""

from __future__ import annotations

from typing import Any

from orchestra.call import Park, StepCall

__all__ = ["Park", "StepCall", "StepKind"]


class StepKind:
    """Base class of the step kinds. Subclasses set ``name`` and implement ``execute``."""

    name: str = ""

    def execute(self, call: StepCall) -> Any:
        raise NotImplementedError
