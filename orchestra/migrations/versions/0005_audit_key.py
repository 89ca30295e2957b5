"""Key the audit trail by its place in the chain.

``audit_events`` had a primary key on its event id and a unique index on
``(run_id, seq)``, so every event appended wrote three B-trees. Nothing looks an
event up by its id (a UUIDv7, unique by construction), so ``(run_id, seq)``
becomes the primary key and the event id a plain column: an append now writes
the table and one index. The table is rebuilt and its rows copied, in order.

Revision ID: 0005_audit_key
Revises: 0004_live_leases
"""

import sqlalchemy as sa
from alembic import op

from orchestra.models import UTCDateTime

revision = "0005_audit_key"
down_revision = "0004_live_leases"
branch_labels = None
depends_on = None

COLUMNS = "id, run_id, seq, type, actor, step_id, at, payload, prev_hash, hash"


def _rebuild(*, by_chain: bool) -> None:
    # PostgreSQL names a key's index in the schema, beside the old table's until it is dropped: each way its own name.
    keys: list[sa.schema.SchemaItem] = (
        [sa.PrimaryKeyConstraint("run_id", "seq", name="pk_audit_events")] if by_chain
        else [sa.PrimaryKeyConstraint("id", name="audit_events_pkey"),
              sa.UniqueConstraint("run_id", "seq", name="uq_audit_seq")])
    op.create_table(
        "audit_events_rebuilt",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("step_id", sa.String(100)),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("payload", sa.JSON),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE", name="audit_events_run_id_fkey"),
        *keys,
    )
    op.execute(f"INSERT INTO audit_events_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM audit_events ORDER BY run_id, seq")
    op.drop_table("audit_events")
    op.rename_table("audit_events_rebuilt", "audit_events")


def upgrade() -> None:
    _rebuild(by_chain=True)


def downgrade() -> None:
    _rebuild(by_chain=False)
