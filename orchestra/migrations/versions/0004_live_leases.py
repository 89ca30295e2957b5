"""Index only the leases that are live.

The sweeper looks for lapsed leases; the old index on (status, lease_expires_at)
held every step row ever run and was rewritten on both of a step's transitions.
A partial index holds only the rows with a lease, which is the running steps
and the ones backing off: the claim adds an entry and the completion drops it.

Revision ID: 0004_live_leases
Revises: 0003_access
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_live_leases"
down_revision = "0003_access"
branch_labels = None
depends_on = None

HELD = sa.text("lease_expires_at IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_step_runs_lease", table_name="step_runs")
    op.create_index("ix_step_runs_live_lease", "step_runs", ["lease_expires_at"], sqlite_where=HELD,
                    postgresql_where=HELD)


def downgrade() -> None:
    op.drop_index("ix_step_runs_live_lease", table_name="step_runs")
    op.create_index("ix_step_runs_lease", "step_runs", ["status", "lease_expires_at"])
