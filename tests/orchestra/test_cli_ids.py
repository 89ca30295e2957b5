"""Short ids: the 8 characters a listing shows are accepted back wherever a run or task id is taken."""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.runs import submit_run
from tests.orchestra.waitkit import open_task_of
from tests.support.harness import wait_for_run

runner = CliRunner()


def two_runs_of_the_same_minute(register) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    name = f"ids-{uuid.uuid4().hex[:8]}"
    register(f"name: {name}\nsteps: [{{id: a, uses: 'task:tests.support.steps.noop'}}]")
    first, _ = submit_run(name, {}, dispatch=False)
    second, _ = submit_run(name, {}, dispatch=False)
    return first.id, second.id


def test_runs_lists_the_last_8_characters_and_show_takes_them_back(register):
    first, second = two_runs_of_the_same_minute(register)
    listed = runner.invoke(app, ["runs", "--limit", "5"])
    assert listed.exit_code == 0, listed.output
    assert first[-8:] in listed.stdout and second[-8:] in listed.stdout and first not in listed.stdout
    shown = runner.invoke(app, ["show", first[-8:], "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == first
    by_prefix = runner.invoke(app, ["show", first[:-4], "--json"])  # any unique 8+ leading characters
    assert json.loads(by_prefix.stdout)["id"] == first
    upper = runner.invoke(app, ["show", first.upper(), "--json"])
    assert json.loads(upper.stdout)["id"] == first


def test_an_ambiguous_prefix_names_the_candidates_and_a_short_one_asks_for_8(register):
    first, second = two_runs_of_the_same_minute(register)
    common = next(n for n in range(36, 0, -1) if first[:n] == second[:n])
    ambiguous = runner.invoke(app, ["show", first[:max(common, 8)]])
    assert ambiguous.exit_code == 1
    text = " ".join(ambiguous.output.split())
    assert "matches several runs" in text and first in text and second in text, text
    short = runner.invoke(app, ["show", first[-5:]])
    assert short.exit_code == 1 and "at least 8 characters" in " ".join(short.output.split()), short.output
    unknown = runner.invoke(app, ["show", "ffffffff"])
    assert unknown.exit_code == 1 and "no run id starts or ends with 'ffffffff'" in " ".join(unknown.output.split())


def test_cancel_and_audit_take_a_short_id(register):
    run_id, _ = two_runs_of_the_same_minute(register)
    cancelled = runner.invoke(app, ["cancel", run_id[-8:], "--reason", "short ids work"])
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.split()[0] == run_id
    lines = runner.invoke(app, ["audit", run_id[-8:], "--format", "jsonl"]).stdout.splitlines()
    assert [json.loads(line)["type"] for line in lines][-1] == "run.cancelled"


def test_the_api_reads_audits_and_cancels_a_run_by_its_short_id(register):
    from orchestra.api import create_app
    from orchestra.auth import create_key

    run_id, _ = two_runs_of_the_same_minute(register)
    headers = {"Authorization": f"Bearer {create_key(f'ids-{uuid.uuid4().hex[:6]}', 'admin')}"}
    with TestClient(create_app()) as api:
        answer = api.get(f"/v1/runs/{run_id[-8:]}", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == run_id
        assert api.get(f"/v1/runs/{run_id[-5:]}", headers=headers).status_code == 422
        trail = api.get(f"/v1/runs/{run_id[-8:]}/audit", headers=headers)
        assert [e["type"] for e in trail.json()["events"]] == ["run.submitted"] and trail.json()["verified"]
        cancelled = api.post(f"/v1/runs/{run_id[-8:]}/cancel", headers=headers)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["id"] == run_id and cancelled.json()["status"] == "cancelled"


def test_inbox_shows_8_character_task_ids_that_decide_takes(workers):
    submitted = runner.invoke(app, ["submit", "example", "--input", '{"customer": "ann", "message": "Refund please"}',
                                    "--wait", "--json"])
    assert submitted.exit_code == 0, submitted.output
    run_id = json.loads(submitted.stdout)["id"]
    task = open_task_of(run_id)
    listed = runner.invoke(app, ["inbox"])
    assert task["id"][-8:] in listed.stdout and task["id"] not in listed.stdout
    decided = runner.invoke(app, ["decide", task["id"][-8:], "approve", "--input", '{"note": "ok"}'])
    assert decided.exit_code == 0, decided.output
    assert wait_for_run(run_id, ("succeeded", "failed"))["status"] == "succeeded"
