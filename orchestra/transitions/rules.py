"""The state machine's rules: which status each transition leaves from and arrives at.

Every verb in ``orchestra.transitions`` names its rule here before it writes, so
a status change the machine does not allow is refused loudly (``IllegalTransition``)
instead of being written. Each rule is a row of a table that can be tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestra.errors import OrchestraError
from orchestra.models import RunStatus, StepStatus

S = StepStatus
R = RunStatus


class IllegalTransition(OrchestraError):
    """A transition was asked of a row whose status the rule does not leave from."""


@dataclass(frozen=True)
class Rule:
    name: str
    sources: frozenset[str]
    target: str

    def apply(self, what: str, current: str) -> str:
        """The target status, or ``IllegalTransition`` if ``current`` is not a source of this rule."""
        if current not in self.sources:
            allowed = ", ".join(sorted(self.sources))
            raise IllegalTransition(f"cannot {self.name} {what}: it is {current}, and only a {allowed} one can be; "
                                    "this is a bug in Orchestra, please report it with the run id")
        return self.target


def _rule(name: str, sources: set[StepStatus] | set[RunStatus], target: StepStatus | RunStatus) -> Rule:
    return Rule(name, frozenset(s.value for s in sources), target.value)


STEP = {rule.name: rule for rule in (
    _rule("start", {S.pending, S.running}, S.running),  # running: its lease lapsed, a new attempt takes it over
    _rule("skip", {S.pending, S.running}, S.skipped),
    _rule("fan out", {S.pending, S.running}, S.running),
    _rule("succeed", {S.running, S.waiting}, S.succeeded),  # waiting: a decision or a signal resumes it
    _rule("retry", {S.running}, S.pending),
    _rule("hold back", {S.running}, S.pending),
    _rule("park", {S.running}, S.waiting),
    _rule("fail", {S.pending, S.running, S.waiting}, S.failed),
    _rule("abandon", {S.running}, S.failed),
    _rule("cancel", {S.pending, S.running, S.waiting}, S.cancelled),
    _rule("reset", {S.failed, S.cancelled}, S.pending),  # a failed run is retried
)}

RUN = {rule.name: rule for rule in (
    _rule("start", {R.pending, R.running, R.waiting}, R.running),
    _rule("park", {R.running, R.waiting}, R.waiting),
    _rule("resume", {R.running, R.waiting}, R.running),
    _rule("succeed", {R.pending, R.running, R.waiting}, R.succeeded),
    _rule("fail", {R.pending, R.running, R.waiting}, R.failed),
    _rule("cancel", {R.pending, R.running, R.waiting}, R.cancelled),
    _rule("retry", {R.failed}, R.running),
)}


def step(name: str, label: str, current: str) -> str:
    """The status rule ``name`` moves step ``label`` to from ``current``."""
    return STEP[name].apply(f"step {label}", current)


def run(name: str, run_id: str, current: str) -> str:
    """The status rule ``name`` moves run ``run_id`` to from ``current``."""
    return RUN[name].apply(f"run {run_id}", current)
