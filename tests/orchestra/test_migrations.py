"""The migrations build the schema the models describe, on the suite's database (SQLite or PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from orchestra import db
from orchestra.models import Base


def test_the_migrated_database_matches_the_models() -> None:
    with db.engine().connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert drift == [], "the models and the migrations differ: write a migration for the model change"


def test_only_live_leases_are_indexed() -> None:
    """The sweeper's index holds the steps that hold a lease, not every step ever run."""
    with db.engine().connect() as connection:
        indexes = {ix["name"]: ix for ix in inspect(connection).get_indexes("step_runs")}
    assert "ix_step_runs_lease" not in indexes
    assert indexes["ix_step_runs_live_lease"]["column_names"] == ["lease_expires_at"]
