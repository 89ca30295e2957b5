"""Request and response models of the HTTP API; they are what ``/openapi.json`` describes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestra.models import RunStatus, StepStatus

MAX_INT = 2**31 - 1  # the largest integer every database column takes
RunStatusName = Literal["pending", "running", "waiting", "succeeded", "failed", "cancelled"]
StepStatusName = Literal["pending", "running", "waiting", "succeeded", "failed", "skipped", "cancelled"]
assert set(RunStatusName.__args__) == {s.value for s in RunStatus}  # type: ignore[attr-defined]
assert set(StepStatusName.__args__) == {s.value for s in StepStatus}  # type: ignore[attr-defined]


class ErrorItem(BaseModel):
    """One thing wrong with a request: where, what, and how to fix it."""

    loc: list[str | int] = Field(description="Path to the offending field, e.g. ['body', 'input', 'order_id'].")
    msg: str = Field(description="What is wrong and how to fix it.")
    type: str = Field(description="A machine-readable kind, e.g. 'not_found', 'forbidden', 'required'.")


class ErrorResponse(BaseModel):
    """The one error shape of every 4xx and 5xx response."""

    errors: list[ErrorItem]


class WorkflowRef(BaseModel):
    name: str
    version: int


class WorkflowSummary(BaseModel):
    name: str
    version: int = Field(description="The latest version.")
    versions: int = Field(description="How many versions are registered.")


class WorkflowList(BaseModel):
    workflows: list[WorkflowSummary]


class WorkflowOut(BaseModel):
    name: str
    version: int
    spec: dict[str, Any] = Field(description="The stored spec, normalised.")


class RunSubmit(BaseModel):
    """A request to start a run."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, max_length=100, description="The workflow's name.")
    version: int | None = Field(default=None, ge=1, le=MAX_INT, description="A version; the latest when left out.")
    input: Any = Field(default_factory=dict, description="Input; must match the workflow's input_schema.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200,
                                        description="Same key and body: the same run. Also accepted as a header.")
    key: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
                            description="A business key to find the run by, e.g. the order id: GET /v1/runs?key=.")


class StepOut(BaseModel):
    id: str
    item: int | None = Field(default=None, description="The fan-out item index, or null for the step itself.")
    status: StepStatusName
    attempts: int
    output: Any = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class RunOut(BaseModel):
    id: str
    workflow: str
    version: int
    status: RunStatusName
    input: Any = None
    output: Any = None
    error: str | None = None
    submitted_by: str
    key: str | None = Field(default=None, description="The business key given on submission.")
    steps: list[StepOut]
    created_at: str
    updated_at: str


class RunSummary(BaseModel):
    id: str
    workflow: str
    version: int
    status: RunStatusName
    error: str | None = None
    submitted_by: str
    key: str | None = None
    created_at: str
    updated_at: str


class RunList(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(default=None, description="Pass as ?cursor= for the next page; null at the end.")


class SignalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: Any = None


class SignalOut(BaseModel):
    id: str
    run_id: str
    name: str
    status: Literal["delivered", "buffered"] = Field(
        description="delivered: a waiting step took it; buffered: kept until the step parks.")


class AuditEventOut(BaseModel):
    id: str
    run_id: str
    seq: int
    type: str
    actor: str
    step_id: str | None = None
    at: str
    payload: Any = None
    prev_hash: str
    hash: str


class AuditOut(BaseModel):
    events: list[AuditEventOut]
    verified: bool = Field(description="Whether the hash chain recomputes and reaches the run's recorded head.")


class TaskOut(BaseModel):
    id: str
    run_id: str
    step_id: str
    title: str
    assignees: list[str]
    form: dict[str, Any] | None = None
    deadline: str | None = None
    level: int = Field(description="Escalation level; 0 until the first escalation.")
    status: Literal["open", "approved", "rejected", "expired", "cancelled"]
    body: str | None = None
    show: Any = Field(default=None, description="What the approver is shown, rendered from the run.")
    payload_hash: str | None = Field(default=None, description="Send back with a decision to bind it to what was shown.")
    quorum: int = 1
    decided_by: str | None = None
    output: Any = None
    created_at: str | None = None


class TaskList(BaseModel):
    tasks: list[TaskOut]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    input: Any = Field(default=None, description="Must match the task's form.")
    comment: str | None = Field(default=None, max_length=10_000)
    payload_hash: str | None = Field(default=None, max_length=64,
                                     description="The task's payload_hash when it was shown; 409 if it changed since.")


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$", description="[a-z0-9-]+")
    workflow: str = Field(min_length=1, max_length=100)
    cron: str = Field(min_length=1, max_length=100, description="Five-field cron, e.g. '*/5 * * * *'.")
    timezone: str = Field(default="UTC", min_length=1, max_length=64, description="An IANA zone, e.g. 'Europe/Paris'.")
    input: Any = Field(default_factory=dict)
    overlap: Literal["skip", "allow"] = Field(default="skip",
                                             description="skip: no new run while the previous one has not ended.")
    enabled: bool = True


class ScheduleOut(ScheduleIn):
    model_config = ConfigDict(extra="ignore")

    next_run_at: str | None = None
    last_run_id: str | None = None


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict, description="Each dependency and 'ok' or what is wrong.")
