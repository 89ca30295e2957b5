"""Human tasks, decisions, signal waits and signals: the database mirror of the Redis wait state.

Revision ID: 0002_waits
Revises: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

from orchestra.models import UTCDateTime

revision = "0002_waits"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def _run_fk() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "human_tasks",
        sa.Column("id", sa.String(36), primary_key=True),
        _run_fk(),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("row_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("assignees", sa.JSON),
        sa.Column("form", sa.JSON),
        sa.Column("shown", sa.JSON),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("policy", sa.JSON),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("deadline", UTCDateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("closed_at", UTCDateTime),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("output", sa.JSON),
        sa.UniqueConstraint("row_id", "attempt", name="uq_human_task_attempt"),
    )
    op.create_index("ix_human_tasks_status", "human_tasks", ["status", "run_id"])
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("task_id", sa.String(36), sa.ForeignKey("human_tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON),
        sa.Column("comment", sa.Text),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("decided_at", UTCDateTime, nullable=False),
        sa.Column("final_for", sa.String(36), unique=True),
        sa.UniqueConstraint("task_id", "actor", name="uq_decision_actor"),
    )
    op.create_table(
        "signal_waits",
        sa.Column("id", sa.String(36), primary_key=True),
        _run_fk(),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("row_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("deadline", UTCDateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("closed_at", UTCDateTime),
        sa.UniqueConstraint("row_id", "attempt", name="uq_signal_wait_attempt"),
    )
    op.create_index("ix_signal_waits_run", "signal_waits", ["run_id", "name", "status"])
    op.create_table(
        "signals",
        sa.Column("id", sa.String(36), primary_key=True),
        _run_fk(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("payload", sa.JSON),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("consumed_at", UTCDateTime),
        sa.Column("wait_id", sa.String(36)),
    )
    op.create_index("ix_signals_run_name", "signals", ["run_id", "name", "consumed_at"])


def downgrade() -> None:
    op.drop_index("ix_signals_run_name", "signals")
    op.drop_table("signals")
    op.drop_index("ix_signal_waits_run", "signal_waits")
    op.drop_table("signal_waits")
    op.drop_table("decisions")
    op.drop_index("ix_human_tasks_status", "human_tasks")
    op.drop_table("human_tasks")
