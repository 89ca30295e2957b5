"""The migrations build the schema the models describe, on the suite's database (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from orchestra import db, rawsql
from orchestra.audit import ChainHead, chain_event, list_events, verify_chain
from orchestra.migrations import alembic_config
from orchestra.models import Base
from orchestra.settings import get_settings


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


def test_an_audit_event_is_keyed_by_its_place_in_the_chain() -> None:
    """Appending an event writes the table and its key, not three B-trees (migration 0005)."""
    with db.engine().connect() as connection:
        schema = inspect(connection)
        key = schema.get_pk_constraint("audit_events")["constrained_columns"]
        indexes = schema.get_indexes("audit_events") + schema.get_unique_constraints("audit_events")
    assert key == ["run_id", "seq"]
    assert indexes == []


def test_upgrading_through_0005_keeps_every_chain_verifiable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_DATABASE_URL", f"sqlite:///{tmp_path / 'old.db'}")
    get_settings.cache_clear()
    db.reset_engine()
    try:
        _migrate(command.upgrade, "0004_live_leases")
        head = ChainHead("r1", 0, "")
        events = [chain_event(head, "step.succeeded", step_id=f"s{i}", payload={"i": i}) for i in range(3)]
        with db.engine().begin() as connection:
            connection.execute(text("INSERT INTO runs (id, workflow, version, status, submitted_by, created_at, "
                                    "updated_at, audit_seq, audit_hash) VALUES ('r1', 'w', 1, 'succeeded', 'me', "
                                    "'2026-01-01', '2026-01-01', :seq, :hash)"), {"seq": head.seq, "hash": head.hash})
        with rawsql.transaction() as tx:
            tx.insert("audit_events", events)
        _migrate(command.upgrade, "head")
        with db.read_session() as session:
            stored = list_events(session, "r1")
            assert verify_chain(stored, head.hash).verified
        assert [e.id for e in stored] == [e["id"] for e in events]
        _migrate(command.downgrade, "0004_live_leases")
        with db.read_session() as session:
            assert verify_chain(list_events(session, "r1"), head.hash).verified
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        db.reset_engine()


def _migrate(step: Callable[[Config, str], None], revision: str) -> None:
    cfg = alembic_config()
    with db.engine().connect() as connection:
        cfg.attributes["connection"] = connection
        step(cfg, revision)
        connection.commit()
