"""The audit chain verifies, and editing a row by SQL breaks it at that row."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from orchestra import db, transitions
from orchestra.audit import list_events, verify_chain
from orchestra.models import Run
from orchestra.redact import register_secret
from orchestra.runs import submit_run


def make_run(register) -> str:
    name = f"audit-{uuid.uuid4().hex[:8]}"
    register(f"name: {name}\nsteps: [{{id: a, uses: 'task:tests.support.steps.noop'}}]")
    run, _ = submit_run(name, {"k": 1}, dispatch=False)
    for n in range(3):
        transitions.audit(run.id, "test.event", payload={"n": n})
    return run.id


def chain(run_id: str):
    with db.read_session() as session:
        run = session.get(Run, run_id)
        return verify_chain(list_events(session, run_id), run.audit_hash)


def test_an_untouched_chain_verifies(register):
    result = chain(make_run(register))
    assert result.verified and result.events == 4


def test_editing_a_payload_by_sql_is_reported_at_that_event(register):
    run_id = make_run(register)
    with db.engine().begin() as conn:
        conn.execute(text("UPDATE audit_events SET payload = :p WHERE run_id = :r AND seq = 3"),
                     {"p": '{"n": 99}', "r": run_id})
    result = chain(run_id)
    assert not result.verified
    assert result.first_bad_seq == 3


def test_deleting_the_last_event_is_detected(register):
    run_id = make_run(register)
    with db.engine().begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE run_id = :r AND seq = 4"), {"r": run_id})
    assert not chain(run_id).verified


def test_secret_values_are_redacted_from_payloads(register):
    register_secret("s3cr3t-value-123")
    run_id = make_run(register)
    transitions.audit(run_id, "test.secret", payload={"note": "token is s3cr3t-value-123", "password": "x"})
    with db.read_session() as session:
        last = list_events(session, run_id)[-1]
    assert last.payload == {"note": "token is ***", "password": "***"}
    assert chain(run_id).verified
