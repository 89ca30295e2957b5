"""The results database: workflow specs, runs, step executions and the audit trail.

The database is the truth about where a run stands; a Celery canvas is only the
plan for what remains. Migrations live in ``orchestra/migrations``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from orchestra.jsonsafe import json_problem as json_problem  # re-exported: it used to live here
from orchestra.states import (  # noqa: F401 - the states live with no I/O; models re-exports them
    DONE_STEP,
    ENDED_STEP,
    NO_ITEM,
    TERMINAL_RUN,
    RunStatus,
    StepStatus,
    TaskStatus,
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the results database; use orchestra.models.utcnow()")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Workflow(Base):
    """One registered version of a workflow spec."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_workflow_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """A run of one workflow version. Holds the head of its audit chain."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("workflow", "idempotency_key", name="uq_run_idempotency"),
        Index("ix_runs_workflow_status", "workflow", "status"),
        Index("ix_runs_status_updated", "status", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.pending.value)
    input: Mapped[Any] = mapped_column(JSON, nullable=True)
    output: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    submitted_by: Mapped[str] = mapped_column(String(200), default="system")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    audit_seq: Mapped[int] = mapped_column(Integer, default=0)
    audit_hash: Mapped[str] = mapped_column(String(64), default="")
    key: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)  # the caller's business key


_HOLDS_LEASE = text("lease_expires_at IS NOT NULL")


class StepRun(Base):
    """One execution record: a step of a run, or one item of a fan-out step."""

    __tablename__ = "step_runs"
    __table_args__ = (
        UniqueConstraint("run_id", "step_id", "item", name="uq_step_item"),
        # Only rows holding a lease, for the sweeper (migration 0004).
        Index("ix_step_runs_live_lease", "lease_expires_at", sqlite_where=_HOLDS_LEASE, postgresql_where=_HOLDS_LEASE),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(100))
    item: Mapped[int] = mapped_column(Integer, default=NO_ITEM)
    status: Mapped[str] = mapped_column(String(16), default=StepStatus.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    recoveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # lease lapses: its worker died
    input: Mapped[Any | None] = mapped_column(JSON, nullable=True)  # rendered `with`, or the fan-out item
    output: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditEvent(Base):
    """An append-only, hash-chained record of something that acted on a run."""

    __tablename__ = "audit_events"

    # Keyed by its place in the chain, so appending an event writes the table and one index (migration 0005).
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(36))  # UUIDv7: unique by construction, and nothing looks an event up by it
    type: Mapped[str] = mapped_column(String(50))
    actor: Mapped[str] = mapped_column(String(200))
    step_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[Any] = mapped_column(JSON, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ApiKey(Base):
    """An API key. Only the SHA-256 of its secret is stored; the token is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(20))
    groups: Mapped[Any] = mapped_column(JSON)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # public part of the token, for lookup
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Schedule(Base):
    """A cron schedule that starts runs of a workflow."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(100))
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    input: Mapped[Any] = mapped_column(JSON, nullable=True)
    overlap: Mapped[str] = mapped_column(String(8), default="skip")
    enabled: Mapped[bool] = mapped_column(default=True)
    next_run_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    last_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class HumanTask(Base):
    """A ``uses: human`` wait: what the approver is shown and who may decide. Mirrors its Redis wait."""

    __tablename__ = "human_tasks"
    __table_args__ = (
        UniqueConstraint("row_id", "attempt", name="uq_human_task_attempt"),
        Index("ix_human_tasks_status", "status", "run_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(100))
    row_id: Mapped[str] = mapped_column(String(36))  # the waiting StepRun
    attempt: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    assignees: Mapped[Any] = mapped_column(JSON, nullable=True)
    form: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    shown: Mapped[Any] = mapped_column(JSON, nullable=True)  # {title, body, show}: exactly what the approver sees
    payload_hash: Mapped[str] = mapped_column(String(64))
    policy: Mapped[Any] = mapped_column(JSON, nullable=True)  # {quorum, four_eyes, escalate, timeout, on_reject}
    level: Mapped[int] = mapped_column(Integer, default=0)
    deadline: Mapped[datetime | None] = mapped_column(nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.open.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    output: Mapped[Any | None] = mapped_column(JSON, nullable=True)


class Decision(Base):
    """One vote on a human task. The vote that settles the task carries ``final_for`` (unique)."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("task_id", "actor", name="uq_decision_actor"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("human_tasks.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))
    input: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    level: Mapped[int] = mapped_column(Integer)
    payload_hash: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    final_for: Mapped[str | None] = mapped_column(String(36), nullable=True, unique=True)


class SignalWait(Base):
    """A ``uses: signal`` wait. Mirrors its Redis wait."""

    __tablename__ = "signal_waits"
    __table_args__ = (
        UniqueConstraint("row_id", "attempt", name="uq_signal_wait_attempt"),
        Index("ix_signal_waits_run", "run_id", "name", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(100))
    row_id: Mapped[str] = mapped_column(String(36))
    attempt: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    deadline: Mapped[datetime | None] = mapped_column(nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.open.value)  # open, received, expired, cancelled
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Signal(Base):
    """A delivered signal. Kept unconsumed when it arrives before its step parks."""

    __tablename__ = "signals"
    __table_args__ = (Index("ix_signals_run_name", "run_id", "name", "consumed_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    payload: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    consumed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    wait_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
