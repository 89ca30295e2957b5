"""The ``orchestra`` command as a user runs it: exit codes, clear errors, nothing half written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from sqlalchemy import func, select, text

from orchestra import db
from orchestra.models import Run
from tests.support.harness import ROOT


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "orchestra.cli", *args], cwd=ROOT, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def run_count() -> int:
    with db.read_session() as session:
        return session.scalar(select(func.count()).select_from(Run)) or 0


def test_validate_accepts_the_example_and_rejects_a_bad_spec_with_field_paths(tmp_path):
    assert cli("validate", str(ROOT / "config/workflows/example.yaml")).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - {id: a, uses: 'task:x.y', needs: [ghost]}\n")
    result = cli("validate", str(bad))
    assert result.returncode == 1
    assert "steps.0.needs.0" in result.stderr and "ghost" in result.stderr


def test_bad_json_and_a_missing_input_file_are_refused_and_write_no_run():
    before = run_count()
    result = cli("submit", "example", "--input", "{not json")
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    result = cli("submit", "example", "--input", "@/nonexistent/input.json")
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert run_count() == before


def test_input_that_fails_the_schema_names_the_field_and_writes_no_run():
    before = run_count()
    result = cli("submit", "example", "--input", json.dumps({"customer": 7}))
    assert result.returncode == 1
    assert "input" in result.stderr and "message" in result.stderr
    assert run_count() == before


def test_unknown_workflow_is_a_clear_error():
    result = cli("submit", "no-such-workflow", "--input", "{}")
    assert result.returncode == 1 and "no workflow named 'no-such-workflow'" in result.stderr


def test_submit_wait_exits_0_on_success_and_1_on_failure(workers, register, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    register(f"""
name: {name}
steps:
  - {{id: a, uses: "task:tests.support.steps.add", with: {{a: "{{{{ input.a }}}}", b: 1}}}}
  - {{id: b, uses: "task:tests.support.steps.flaky", if: "input.fail", with: {{key: "{name}", fail_times: 9}}}}
""")
    payload = tmp_path / "in.json"
    payload.write_text(json.dumps({"a": 1, "fail": False}))
    ok = cli("submit", name, "--input", f"@{payload}", "--wait")
    assert ok.returncode == 0, ok.stderr
    run_id, status = ok.stdout.split()
    assert status == "succeeded"
    failed = cli("submit", name, "--input", json.dumps({"a": 1, "fail": True}), "--wait")
    assert failed.returncode == 1 and failed.stdout.split()[1] == "failed"
    shown = json.loads(cli("show", run_id, "--json", check=True).stdout)
    assert [s["status"] for s in shown["steps"]] == ["succeeded", "skipped"]
    listed = json.loads(cli("runs", "--workflow", name, "--json", check=True).stdout)
    assert {r["status"] for r in listed} == {"succeeded", "failed"}


def test_audit_verify_holds_then_reports_the_tampered_event(workers, register):
    name = f"cli-audit-{uuid.uuid4().hex[:8]}"
    register(f"name: {name}\nsteps: [{{id: a, uses: 'task:tests.support.steps.noop'}}]")
    run_id = cli("submit", name, "--input", "{}", "--wait", check=True).stdout.split()[0]
    verified = cli("audit", run_id, "--verify")
    assert verified.returncode == 0 and "verified" in verified.stderr
    lines = cli("audit", run_id, "--format", "jsonl", check=True).stdout.splitlines()
    assert [json.loads(line)["type"] for line in lines][0] == "run.submitted"
    with db.engine().begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE run_id = :r AND seq = 2"), {"r": run_id})
    broken = cli("audit", run_id, "--verify")
    assert broken.returncode == 1 and "first bad event: 2" in broken.stderr


def test_show_of_an_unknown_run_names_the_fix():
    result = cli("show", "not-a-uuid")
    assert result.returncode == 1 and "orchestra runs" in result.stderr


def test_an_oversized_input_file_is_refused_with_the_limit_and_writes_no_run(tmp_path):
    before = run_count()
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"customer": "ann", "message": "x" * 1_100_000}))
    result = cli("submit", "example", "--input", f"@{big}")
    assert result.returncode == 1 and "byte limit" in result.stderr
    assert run_count() == before


def test_retry_resumes_a_failed_run_without_rerunning_what_succeeded(workers, register, redis_client):
    name = f"cli-retry-{uuid.uuid4().hex[:8]}"
    register(f"""
name: {name}
steps:
  - {{id: first, uses: "task:tests.support.steps.count", with: {{key: "{name}:first"}}}}
  - {{id: second, uses: "task:tests.support.steps.flaky", with: {{key: "{name}:second", fail_times: 1}},
     retry: {{attempts: 1}}}}
""")
    failed = cli("submit", name, "--wait")
    assert failed.returncode == 1
    run_id, status = failed.stdout.split()
    assert status == "failed"
    again = cli("retry", run_id, "--wait")
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [run_id, "succeeded"]
    assert int(redis_client.get(f"{name}:first")) == 1, "the step that had succeeded ran again"
    assert int(redis_client.get(f"{name}:second")) == 2
    types = [json.loads(line)["type"] for line in cli("audit", run_id, "--format", "jsonl", check=True).stdout.splitlines()]
    assert "run.retried" in types and types[-1] == "run.succeeded"
    refused = cli("retry", run_id)
    assert refused.returncode == 1 and "only failed runs can be retried" in " ".join(refused.stderr.split())


def test_submit_wait_of_a_branching_run_exits_without_a_traceback(workers, register):
    name = f"cli-fork-{uuid.uuid4().hex[:8]}"
    register(f"""
name: {name}
steps:
  - {{id: a, uses: "task:tests.support.steps.noop"}}
  - {{id: b, uses: "task:tests.support.steps.noop", needs: [a]}}
  - {{id: c, uses: "task:tests.support.steps.noop", needs: [a]}}
""")
    result = cli("submit", name, "--wait")
    assert result.returncode == 0 and result.stdout.split()[1] == "succeeded", result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


def test_an_unpaired_surrogate_in_cli_input_is_refused_and_writes_no_run():
    before = run_count()
    result = cli("submit", "example", "--input", '{"customer": "ann", "message": "\\ud800", "contacts": []}')
    assert result.returncode == 1 and "unpaired UTF-16 surrogate" in result.stderr, result.stderr
    assert run_count() == before


def test_nan_in_cli_input_is_refused_and_writes_no_run():
    before = run_count()
    result = cli("submit", "example", "--input", '{"customer": "ann", "message": "x", "score": NaN}')
    assert result.returncode == 1 and "NaN, which is not JSON" in result.stderr
    assert run_count() == before


def test_runs_with_an_unknown_status_names_the_statuses():
    result = cli("runs", "--status", "bogus")
    assert result.returncode == 1
    assert "'bogus' is not a run status" in result.stderr and "succeeded" in result.stderr, result.stderr


def test_submit_with_redis_down_records_the_run_as_pending_exits_3_and_a_resubmission_returns_it(stack):
    key = f"outage-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"customer": "ann", "message": "submitted while Redis was down"})
    stack.redis.stop()
    try:
        down = cli("submit", "example", "--input", body, "--idempotency-key", key)
        as_json = cli("submit", "example", "--input", body, "--json")
    finally:
        stack.redis.start()
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["enqueued"] is False, as_json.stderr
    assert down.returncode == 3, down.stderr
    run_id = down.stdout.strip()
    said = " ".join(down.stderr.split())
    assert f"recorded as pending as run {run_id}; it starts when Redis is back" in said, said
    assert f"--idempotency-key {key} returns this run" in said and "Traceback" not in down.stderr
    with db.read_session() as session:
        assert session.get(Run, run_id).status == "pending"
    again = cli("submit", "example", "--input", body, "--idempotency-key", key, check=True)
    assert again.stdout.strip() == run_id


def test_workflows_register_list_and_show_a_spec_file(tmp_path):
    name = f"cli-wf-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "flow.yaml"
    path.write_text(f"name: {name}\ndescription: Says hello\nsteps:\n  - {{id: a, uses: 'task:examples.noop'}}\n")
    first = cli("workflows", "register", str(path), check=True)
    assert f"registered {name} v1" in first.stdout
    assert json.loads(cli("workflows", "register", str(path), "--json", check=True).stdout) == {"name": name, "version": 1}
    path.write_text(path.read_text() + "  - {id: b, uses: 'task:examples.noop'}\n")
    assert json.loads(cli("workflows", "register", str(path), "--json", check=True).stdout)["version"] == 2
    listed = json.loads(cli("workflows", "list", "--json", check=True).stdout)
    assert {"name": name, "version": 2, "versions": 2} in listed
    table = cli("workflows", "list", check=True).stdout
    assert any(line.split()[:4] == [name, "v2", "2", "2"] for line in table.splitlines()), table
    shown = json.loads(cli("workflows", "show", name, "--json", check=True).stdout)
    assert [s["id"] for s in shown["steps"]] == ["a", "b"] and shown["version"] == 2
    assert "uses: task:examples.noop" in cli("workflows", "show", name, "--version", "1", check=True).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: {name}\nsteps: [{{id: a, uses: 'task:examples.nosuch'}}]\n")
    refused = cli("workflows", "register", str(bad))
    assert refused.returncode == 1 and "no step function 'nosuch'" in " ".join(refused.stderr.split())


def test_an_unknown_workflow_points_to_workflows_register():
    result = cli("submit", "no-such-workflow-either", "--input", "{}")
    assert result.returncode == 1
    assert "register it with `orchestra workflows register FILE`" in " ".join(result.stderr.split()), result.stderr
    shown = cli("workflows", "show", "no-such-workflow-either")
    assert shown.returncode == 1 and "orchestra workflows register FILE" in " ".join(shown.stderr.split())


def test_schedules_list_shows_a_saved_schedule_whole():
    from orchestra.schedules import save_schedule

    name = f"cli-sched-{uuid.uuid4().hex[:6]}"
    save_schedule({"name": name, "workflow": "example", "cron": "*/15 9-17 * * 1-5", "timezone": "Europe/Amsterdam",
                   "input": {"customer": "ann", "message": "hi"}})
    listed = json.loads(cli("schedules", "list", "--json", check=True).stdout)
    assert next(s for s in listed if s["name"] == name)["cron"] == "*/15 9-17 * * 1-5"
    table = cli("schedules", "list", check=True).stdout
    row = next(line for line in table.splitlines() if line.startswith(name))
    assert "*/15 9-17 * * 1-5" in row and " in " in row, table  # enabled: when it is next due
