"""The approver's CLI on the example workflow: submit parks, inbox shows, decide resumes, audit verifies."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from orchestra.cli import app
from tests.orchestra.waitkit import audit_of, open_task_of
from tests.support.harness import wait_for_run

runner = CliRunner()


def test_example_parks_at_its_approval_and_cli_decide_runs_it_to_completion(workers):
    submitted = runner.invoke(app, ["submit", "example", "--input", '{"customer": "ann", "message": "Refund please"}',
                                    "--wait", "--json"])
    assert submitted.exit_code == 0, submitted.output
    run_id = json.loads(submitted.stdout)["id"]
    assert json.loads(submitted.stdout)["status"] == "waiting"
    task = open_task_of(run_id)

    listed = runner.invoke(app, ["inbox", "--json"])
    assert task["id"] in [t["id"] for t in json.loads(listed.stdout)]
    as_lead = runner.invoke(app, ["inbox", "--json", "--as", "lee", "--group", "leads"])
    assert task["id"] in [t["id"] for t in json.loads(as_lead.stdout)]
    as_other = runner.invoke(app, ["inbox", "--json", "--as", "olga", "--group", "sales"])
    assert task["id"] not in [t["id"] for t in json.loads(as_other.stdout)]

    bad = runner.invoke(app, ["decide", task["id"], "approve", "--as", "olga", "--group", "sales"])
    assert bad.exit_code == 1 and "not an assignee" in bad.output
    decided = runner.invoke(app, ["decide", task["id"], "approve", "--as", "lee", "--group", "leads",
                                  "--input", '{"note": "ok"}', "--comment", "looks right"])
    assert decided.exit_code == 0, decided.output
    again = runner.invoke(app, ["decide", task["id"], "reject", "--as", "lee", "--group", "leads"])
    assert again.exit_code == 1 and "already decided by lee" in again.output

    view = wait_for_run(run_id, ("succeeded", "failed"))
    assert view["status"] == "succeeded"
    assert view["output"]["decision"] == "approve" and view["output"]["decided_by"] == "lee"
    events, verified = audit_of(run_id)
    assert verified
    assert {"human.requested", "human.decided"} <= {e.type for e in events}


def test_cli_cancel_and_recover(workers):
    submitted = runner.invoke(app, ["submit", "example", "--input", '{"customer": "bo", "message": "hi", "contacts": []}', "--wait",
                                    "--json"])
    run_id = json.loads(submitted.stdout)["id"]
    open_task_of(run_id)
    recovered = runner.invoke(app, ["recover"])
    assert recovered.exit_code == 0 and "rebuilt" in recovered.output
    cancelled = runner.invoke(app, ["cancel", run_id, "--reason", "demo over"])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    twice = runner.invoke(app, ["cancel", run_id])
    assert twice.exit_code == 1 and "already ended" in twice.output
