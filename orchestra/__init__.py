"""Orchestra: a durable, distributed orchestrator for AI-assisted business workflows, on Celery.

What users import lives here; the test ``tests/test_exported_members.py`` pins it.
"""

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
from orchestra.spec import Step, WorkflowSpec, load_spec
from orchestra.steps.base import StepCall
from orchestra.steps.task import step

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
