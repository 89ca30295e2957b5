"""The step kinds a worker can run, by the name ``uses:`` gives them."""

from __future__ import annotations

from orchestra.errors import StepError
from orchestra.steps.agent import AgentKind
from orchestra.steps.base import StepKind
from orchestra.steps.http import HttpKind
from orchestra.steps.human import HumanKind
from orchestra.steps.llm import LlmKind
from orchestra.steps.signal import SignalKind
from orchestra.steps.sql import SqlKind
from orchestra.steps.task import TaskKind

KINDS: dict[str, StepKind] = {kind.name: kind for kind in (
    TaskKind(), HumanKind(), SignalKind(), HttpKind(), SqlKind(), LlmKind(), AgentKind())}


def get_kind(name: str) -> StepKind:
    """The step kind ``uses:`` names."""
    try:
        return KINDS[name]
    except KeyError:
        raise StepError(f"step kind '{name}' is not available in this worker; use one of "
                        f"{', '.join(sorted(KINDS))}", retryable=False) from None
