"""Count the times a step's worker died under it, and give runs a business key.

``step_runs.recoveries`` counts the lease lapses of a step (its worker died
running it). After ``ORCHESTRA_MAX_RECOVERIES`` the step is abandoned instead
of being claimed again. ``runs.key`` is the caller's business key (an order
id, say), set on submission and searched by in the API and the UI.

Revision ID: 0006_recoveries_and_key
Revises: 0005_audit_key
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_recoveries_and_key"
down_revision = "0005_audit_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("step_runs") as batch:
        batch.add_column(sa.Column("recoveries", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("key", sa.String(200), nullable=True))
    op.create_index("ix_runs_key", "runs", ["key"])


def downgrade() -> None:
    op.drop_index("ix_runs_key", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("key")
    with op.batch_alter_table("step_runs") as batch:
        batch.drop_column("recoveries")
