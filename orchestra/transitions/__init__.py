"""The state machine: the one owner of every status change of a run, a step and an item.

Each verb changes statuses and appends the audit events that say so, in one
transaction; nothing else in Orchestra writes a status or appends to a chain.
Which status a verb may leave from is a rule in ``rules``.

::

    step / item                                   run
    pending ──start──▶ running ──succeed──▶ succeeded     pending ──start──▶ running ──succeed──▶ succeeded
       │  ▲              │ │ │                            running ◀─resume── waiting ◀──park──┘
       │  └─retry/hold ──┘ │ └─park──▶ waiting ─succeed─▶  any open ──fail──▶ failed ──retry──▶ running
       └──skip──▶ skipped  └─fail/abandon──▶ failed       any open ──cancel─▶ cancelled
    open ──cancel──▶ cancelled (the run ended)            failed/cancelled ──reset──▶ pending (run retried)

- ``steps``: the step runtime's fast path (claim, succeed, retry, hold back,
  park, fail, collect, finish), each one transaction through ``orchestra.rawsql``.
- ``runs``: verbs made beside a caller's own writes (submit, resume, fail a
  waiting step, cancel, retry a run, notes), on ``within(session)``.
- ``ends``: how a run ends, and what its end closes.
"""

from orchestra.rawsql import Tx
from orchestra.transitions.rows import Outcome, RunRow, StepRow
from orchestra.transitions.rules import IllegalTransition
from orchestra.transitions.runs import (
    audit,
    cancel,
    fail_waiting,
    locked,
    note,
    resume,
    retry,
    submitted,
    within,
)
from orchestra.transitions.steps import Claim, claim, collect, fail, finish_run, hold_back, lock_run, park
from orchestra.transitions.steps import retry as retry_step
from orchestra.transitions.steps import succeed

__all__ = [
    "Claim", "IllegalTransition", "Outcome", "RunRow", "StepRow", "Tx",
    "audit", "cancel", "claim", "collect", "fail", "fail_waiting", "finish_run", "hold_back", "lock_run", "locked",
    "note",
    "park", "resume", "retry", "retry_step", "submitted", "succeed", "within",
]
