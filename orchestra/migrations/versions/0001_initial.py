"""Workflows, runs, step executions and the audit trail.

Revision ID: 0001_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op

from orchestra.models import UTCDateTime

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_workflow_version"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON),
        sa.Column("output", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("request_hash", sa.String(64)),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
        sa.Column("audit_hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("workflow", "idempotency_key", name="uq_run_idempotency"),
    )
    op.create_index("ix_runs_workflow_status", "runs", ["workflow", "status"])
    op.create_index("ix_runs_status_updated", "runs", ["status", "updated_at"])
    op.create_table(
        "step_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("item", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("input", sa.JSON),
        sa.Column("output", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("lease_token", sa.String(36)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.UniqueConstraint("run_id", "step_id", "item", name="uq_step_item"),
    )
    op.create_index("ix_step_runs_lease", "step_runs", ["status", "lease_expires_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("step_id", sa.String(100)),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("payload", sa.JSON),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("run_id", "seq", name="uq_audit_seq"),
    )


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("step_runs")
    op.drop_index("ix_runs_status_updated", "runs")
    op.drop_index("ix_runs_workflow_status", "runs")
    op.drop_table("runs")
    op.drop_table("workflows")
