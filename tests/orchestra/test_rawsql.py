"""The runtime's driver-level statements agree with SQLAlchemy on every value, and roll back whole."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select

from orchestra import db, rawsql
from orchestra.models import StepRun
from orchestra.runs import submit_run

# On SQLite a plan is made on a snapshot and its guarded writes applied after; PostgreSQL plans under the run's row lock.
ON_POSTGRES = os.environ.get("ORCHESTRA_TEST_DATABASE_URL", "").startswith("postgresql")
sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason="SQLite plans on snapshots")
postgres_only = pytest.mark.skipif(not ON_POSTGRES, reason="set ORCHESTRA_TEST_DATABASE_URL to a PostgreSQL database")

ODD_VALUES = [None, 0, 7, -1.5, "text", "", "7", "null", [1, "two", None], {"nested": {"a": [True, False]}}, True]


def new_row(register) -> str:
    name = f"raw-{uuid.uuid4().hex[:8]}"
    register(f"name: {name}\nsteps: [{{id: a, uses: 'task:tests.support.steps.noop'}}]")
    run, _ = submit_run(name, {}, dispatch=False)
    with db.read_session() as session:
        return session.scalars(select(StepRun.id).where(StepRun.run_id == run.id)).one()


@pytest.fixture
def row_id(register) -> str:
    return new_row(register)


def read_back(row_id: str) -> StepRun:
    with db.read_session() as session:
        row = session.get(StepRun, row_id)
        assert row is not None
        return row


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_json_written_raw_reads_the_same_through_sqlalchemy_and_back(row_id, value):
    with rawsql.transaction() as tx:
        assert tx.update("step_runs", row_id, output=value) == 1
    assert read_back(row_id).output == value
    with db.write_session() as session:
        session.get(StepRun, row_id).input = value  # type: ignore[union-attr]
    with rawsql.transaction() as tx:
        row = tx.one("SELECT input, output FROM step_runs WHERE id = :row_id", row_id=row_id)
    assert row is not None and row.input == value and row.output == value
    assert type(row.output) is type(value)


def test_times_are_utc_both_ways_and_compare_in_sql(row_id):
    moment = datetime(2026, 11, 25, 8, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    with rawsql.transaction() as tx:
        tx.update("step_runs", row_id, started_at=moment, lease_expires_at=moment)
    stored = read_back(row_id)
    assert stored.started_at == moment and stored.started_at.utcoffset() == timedelta(0)
    with db.read_session() as session:  # the sweeper's comparison sees the raw value as a time, not a string
        lapsed = session.scalars(select(StepRun.id).where(StepRun.lease_expires_at < moment + timedelta(microseconds=1),
                                                          StepRun.id == row_id)).all()
    assert lapsed == [row_id]
    with rawsql.transaction() as tx:
        row = tx.one("SELECT started_at FROM step_runs WHERE id = :row_id", row_id=row_id)
    assert row is not None and row.started_at == moment and row.started_at.utcoffset() == timedelta(0)


def test_a_naive_time_is_refused_and_nothing_is_written(row_id):
    with pytest.raises(ValueError, match="naive datetime given for started_at"):
        with rawsql.transaction() as tx:
            tx.update("step_runs", row_id, status="running")
            tx.update("step_runs", row_id, started_at=datetime(2026, 1, 1))
    assert read_back(row_id).status == "pending"  # the first update was rolled back with it


def test_an_error_mid_transaction_rolls_everything_back_and_frees_the_writer_lock(row_id):
    with pytest.raises(RuntimeError):
        with rawsql.transaction() as tx:
            tx.update("step_runs", row_id, status="running", output={"half": "written"})
            raise RuntimeError("worker died here")
    row = read_back(row_id)
    assert row.status == "pending" and row.output is None
    with rawsql.transaction() as tx:  # neither the file lock nor the database lock was left held
        assert tx.update("step_runs", row_id, status="succeeded") == 1
    assert read_back(row_id).status == "succeeded"


def test_an_unknown_column_is_named(row_id):
    with pytest.raises(KeyError, match="step_runs has no column colour"):
        with rawsql.transaction() as tx:
            tx.update("step_runs", row_id, colour="red")


def _status_plan(row_id: str, plans: list[str], interfere: int) -> Any:
    """A plan that reads the row's status and appends to it, guarded; it changes the row behind its own back
    the first ``interfere`` times it is made, as another writer would between the snapshot and the write."""

    def plan(tx: rawsql.Tx) -> str:
        row = tx.one("SELECT status, lease_token, output FROM step_runs WHERE id = :row_id", row_id=row_id)
        assert row is not None
        plans.append(row.status)
        if len(plans) <= interfere:
            with rawsql.transaction() as other:
                other.update("step_runs", row_id, status=f"moved{len(plans)}")
        tx.update("step_runs", row_id, guard={"status": row.status, "lease_token": row.lease_token},
                  output=f"{row.status}+planned")
        return str(row.status)

    return plan


@sqlite_only
def test_an_optimistic_plan_whose_row_moved_on_is_made_again_from_a_fresh_snapshot(row_id):
    plans: list[str] = []
    result = rawsql.optimistic(_status_plan(row_id, plans, interfere=1))
    assert plans == ["pending", "moved1"]  # the first plan's guarded write found the row changed
    assert result == "moved1"
    assert read_back(row_id).output == "moved1+planned"


@sqlite_only
def test_a_plan_whose_snapshot_another_writer_outdated_elsewhere_is_written_once_without_replanning(register):
    """On SQLite the plan first writes inside its own snapshot; a commit to another row makes that refuse, and the
    plan's guarded writes then go into a fresh transaction as they are."""
    mine, other = new_row(register), new_row(register)
    plans: list[str] = []

    def plan(tx: rawsql.Tx) -> str:
        row = tx.one("SELECT status, lease_token FROM step_runs WHERE id = :row_id", row_id=mine)
        assert row is not None
        plans.append(row.status)
        with rawsql.transaction() as elsewhere:
            elsewhere.update("step_runs", other, output="meanwhile")
        tx.update("step_runs", mine, guard={"status": row.status, "lease_token": row.lease_token}, output="planned")
        return str(row.status)

    assert rawsql.optimistic(plan) == "pending"
    assert plans == ["pending"]
    assert (read_back(mine).output, read_back(other).output) == ("planned", "meanwhile")


@sqlite_only
def test_a_plan_meeting_a_writer_from_outside_waits_for_it_then_writes_without_replanning(register):
    """A writer that does not queue on Orchestra's lock file (the sqlite3 shell, say) holds SQLite's write lock:
    the plan's write waits for it, finds its snapshot outdated by what that writer committed, and goes into a
    write transaction of its own, guarded as planned."""
    mine, other = new_row(register), new_row(register)
    outsider = sqlite3.connect(str(db.engine().url.database), isolation_level=None, check_same_thread=False)
    outsider.execute("BEGIN IMMEDIATE")
    outsider.execute("UPDATE step_runs SET error = 'from outside' WHERE id = ?", (other,))
    committer = threading.Timer(0.3, outsider.commit)
    plans: list[str] = []

    def plan(tx: rawsql.Tx) -> None:
        tx.one("SELECT status FROM step_runs WHERE id = :row_id", row_id=mine)  # the snapshot starts here
        plans.append("made")
        committer.start()
        tx.update("step_runs", mine, guard={"status": "pending"}, output="waited")

    try:
        rawsql.optimistic(plan)
    finally:
        committer.join()
        outsider.close()
    assert plans == ["made"]
    assert (read_back(mine).output, read_back(other).error) == ("waited", "from outside")


@sqlite_only
def test_an_optimistic_plan_that_keeps_clashing_runs_under_the_writer_lock(row_id):
    plans: list[str] = []
    rawsql.optimistic(_status_plan(row_id, plans, interfere=rawsql.OPTIMISTIC_ATTEMPTS))
    assert len(plans) == rawsql.OPTIMISTIC_ATTEMPTS + 1
    assert read_back(row_id).output == f"moved{rawsql.OPTIMISTIC_ATTEMPTS}+planned"


@postgres_only
def test_on_postgresql_a_plan_holds_its_run_row_until_its_writes_commit(row_id):
    run_id = read_back(row_id).run_id
    seen: list[Any] = []

    def next_writer() -> None:
        with rawsql.transaction() as tx:
            tx.lock("SELECT id FROM runs WHERE id = :run_id", run_id=run_id)
            seen.append(read_back(row_id).output)

    def plan(tx: rawsql.Tx) -> threading.Thread:
        tx.lock("SELECT id FROM runs WHERE id = :run_id", run_id=run_id)
        writer = threading.Thread(target=next_writer)
        writer.start()
        time.sleep(0.3)
        assert seen == []  # the other writer waits on the run's row
        tx.update("step_runs", row_id, output="planned")
        return writer

    rawsql.optimistic(plan).join(timeout=10)
    assert seen == ["planned"]


def test_a_stale_plan_writes_nothing_at_all(row_id):
    with rawsql.transaction() as tx:
        tx.update("step_runs", row_id, status="running")
    reader_writes: list[rawsql.Write] = []
    with rawsql.transaction() as tx:
        tx.update("step_runs", row_id, output="kept")
    with pytest.raises(rawsql.Stale):
        with rawsql.transaction() as tx:
            deferred = rawsql.Tx(None, rawsql.dialect_of(db.engine()), deferred=True)
            deferred.insert("audit_events", [])  # nothing to insert: no write held back
            deferred.update("step_runs", row_id, output="lost")  # unguarded, held back
            deferred.update("step_runs", row_id, guard={"status": "pending"}, status="succeeded")
            assert deferred.writes is not None
            reader_writes = deferred.writes
            tx.apply(reader_writes)
    row = read_back(row_id)
    assert (row.status, row.output) == ("running", "kept")  # the guard failed first; the unguarded write rolled back
