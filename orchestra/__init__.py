"""Orchestra: a durable, distributed orchestrator for AI-assisted business workflows, on Celery.

What users import lives here; the test ``tests/test_exported_members.py`` pins it.
"""

from typing import TYPE_CHECKING, Any

from orchestra.errors import (
    AlreadyDecided,
    AuthError,
    Conflict,
    ConnectorError,
    Forbidden,
    GuardrailBlocked,
    InputError,
    NotAssignee,
    NotFound,
    OrchestraError,
    SpecError,
    StepError,
    StepTimeout,
    TaskExpired,
    TemplateError,
    WaitError,
)

if TYPE_CHECKING:
    from orchestra.spec import Step, WorkflowSpec, load_spec
    from orchestra.steps.base import StepCall
    from orchestra.steps.task import step

# Imported on first use, so that `orchestra --help` and `import orchestra.spec` do not load every step kind
# (and with them SQLAlchemy, httpx and redis).
_LAZY = {"Step": "orchestra.spec", "WorkflowSpec": "orchestra.spec", "load_spec": "orchestra.spec",
         "StepCall": "orchestra.steps.base", "step": "orchestra.steps.task"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'orchestra' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "AlreadyDecided",
    "AuthError",
    "Conflict",
    "ConnectorError",
    "Forbidden",
    "GuardrailBlocked",
    "InputError",
    "NotAssignee",
    "NotFound",
    "OrchestraError",
    "SpecError",
    "Step",
    "StepCall",
    "StepError",
    "StepTimeout",
    "TaskExpired",
    "TemplateError",
    "WaitError",
    "WorkflowSpec",
    "__version__",
    "load_spec",
    "step",
]
