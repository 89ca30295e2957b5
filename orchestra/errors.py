"""Orchestra's exceptions. Third-party errors are translated at the boundary.

Tree::

    OrchestraError
    ├── ConfigError                 settings, config/ files, embedded services
    ├── SpecError                   a workflow spec does not validate (carries .errors)
    ├── NotFound                    unknown workflow, run, task or key
    ├── InputError                  run input or a form fails its JSON Schema (carries .errors)
    ├── Conflict                    idempotency key reused with another body, state race
    ├── StepError                   a step failed while running
    │   ├── StepTimeout             a step ran past its timeout
    │   └── TemplateError           a template or condition failed to render
    ├── ConnectorError              a connector call failed (retryable depends on cause)
    │   ├── GuardrailBlocked        a call was refused by policy
    │   ├── RateLimited             held back by a shared rate limit; retried without spending an attempt
    │   ├── ConnectorUnavailable    the system stayed down through the connector's retries (retryable)
    │   ├── BudgetExceeded          a model call would overspend a token budget
    │   └── InvalidAnswer           the model's answers kept breaking output_schema
    ├── WaitError                   human tasks and signals
    │   ├── AlreadyDecided
    │   ├── TaskExpired
    │   ├── PayloadChanged          what the approver saw is no longer what the task shows
    │   └── NotAssignee
    ├── AuthError                   missing or bad credentials
    │   └── Forbidden               a role that may not do this
    └── Unavailable                 Redis or the database cannot be reached (retryable)
        └── NotEnqueued             a run is recorded, but the broker could not take it (carries .run_id)

``retryable`` says whether the step runtime should try the step again.
"""

from __future__ import annotations

from typing import Any


class OrchestraError(Exception):
    """Root of every error Orchestra raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class ConfigError(OrchestraError):
    """Settings or files under config/ are wrong."""


class ErrorList(OrchestraError):
    """An error carrying a list of ``{"loc": [...], "msg": str, "type": str}`` items."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors

    def __str__(self) -> str:
        lines = [self.message]
        for err in self.errors:
            loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
            lines.append(f"  {loc}: {err['msg']}")
        return "\n".join(lines)


class SpecError(ErrorList):
    """A workflow spec failed validation."""


class InputError(ErrorList):
    """Input failed a JSON Schema (a workflow's input_schema or a task's form)."""


class NotFound(OrchestraError):
    """An id or name that does not exist."""


class Conflict(OrchestraError):
    """The request clashes with what is already recorded."""


class StepError(OrchestraError):
    """A step failed. Retryable unless said otherwise."""

    retryable = True


class StepTimeout(StepError):
    """A step ran longer than its ``timeout``."""


class TemplateError(StepError):
    """A template or condition could not be evaluated; retrying will not help."""

    retryable = False


class ConnectorError(OrchestraError):
    """A connector call failed."""


class GuardrailBlocked(ConnectorError):
    """A call was refused by a connector's or workflow's policy."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message, retryable=False)
        self.rule = rule


class RateLimited(ConnectorError):
    """A call was held back by a connector's shared rate limit or concurrency cap.

    The runtime reschedules the step after ``retry_after`` seconds without
    spending one of its attempts (``holds_back``), so no worker slot waits.
    """

    retryable = True
    holds_back = True

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retryable=True)
        self.retry_after = retry_after


class ConnectorUnavailable(ConnectorError):
    """A system stayed down (connect errors, 5xx, 429) through the connector's own retries.

    Retryable: the runtime tries the step again, waiting at least ``retry_after``
    seconds when the system said how long (``Retry-After``).
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retryable=True)
        self.retry_after = retry_after


class BudgetExceeded(ConnectorError):
    """A model call would spend more tokens than a run's or a workflow's budget allows."""

    def __init__(self, message: str, *, scope: str, limit: int, used: int, needed: int) -> None:
        super().__init__(message, retryable=False)
        self.scope, self.limit, self.used, self.needed = scope, limit, used, needed


class InvalidAnswer(ConnectorError):
    """The model's answers kept breaking ``output_schema``."""

    def __init__(self, message: str, *, problem: str, output: dict[str, Any]) -> None:
        super().__init__(message, retryable=False)
        self.problem, self.output = problem, output


class WaitError(OrchestraError):
    """Human tasks and signals."""


class AlreadyDecided(WaitError, Conflict):
    """A second decision on a task."""


class TaskExpired(WaitError, Conflict):
    """A decision on a task that expired or was closed."""


class PayloadChanged(WaitError, Conflict):
    """A decision bound to a payload that has changed since the task was shown."""


class NotAssignee(WaitError):
    """A decision by someone the task is not assigned to."""


class AuthError(OrchestraError):
    """No credentials, or bad ones."""


class Forbidden(AuthError):
    """Valid credentials whose role may not do this."""


class Unavailable(OrchestraError):
    """Redis or the results database cannot be reached; trying again later may work."""

    retryable = True


class NotEnqueued(Unavailable):
    """The run is recorded as pending, but the broker could not take it; the sweeper dispatches it later."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id
