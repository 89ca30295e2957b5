"""The CLI's listings rendered by rich at a fixed 80 columns: nothing wraps, nothing that matters is cut."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from rich.console import Console

from orchestra.cli import tables
from orchestra.ids import new_id

NOW = datetime.now(timezone.utc)
STATUSES = ("pending", "running", "waiting", "succeeded", "failed", "cancelled")
LONG = "a-workflow-with-a-really-quite-long-name-that-goes-on"


def render(table: object, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None, force_terminal=False, legacy_windows=False)
    console.print(table)
    return console.export_text().splitlines()


def assert_fits(lines: list[str]) -> None:
    over = [line for line in lines if len(line) > 80]
    assert not over, f"lines over 80 columns: {over}"


def iso(minutes_ago: float) -> str:
    """A time that long ago, from the clock now; the half minute keeps "3 min ago" true while the test runs."""
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago + 0.5)).isoformat()


def run_rows() -> list[dict[str, object]]:
    return [{"id": new_id(), "workflow": LONG if n % 2 else "refund-request", "version": n + 1, "status": status,
             "created_at": iso(3 + n * 70), "error": "step 'refund' failed: " + "connection refused " * 8 if status == "failed" else None}
            for n, status in enumerate(STATUSES)]


def test_runs_at_80_columns_show_whole_statuses_8_character_ids_and_relative_times():
    rows = run_rows()
    lines = render(tables.runs_table(rows))
    assert_fits(lines)
    body = "\n".join(lines)
    for row in rows:
        line = next(line for line in lines if str(row["id"])[-8:] in line)
        assert re.search(rf"\b{row['status']}\b", line), line  # whole, on the row's one line
        assert str(row["id"]) not in body
    assert len(lines) == 2 + len(rows)  # the header, its rule, and one line per run
    assert "3 min ago" in body and "1 h ago" in body
    assert "…" in next(line for line in lines if "failed" in line)  # the long error is cut, not wrapped


def test_runs_wide_shows_full_ids_and_timestamps():
    rows = run_rows()
    lines = render(tables.runs_table(rows, wide=True), width=240)
    body = "\n".join(lines)
    for row in rows:
        assert str(row["id"]) in body
        assert datetime.fromisoformat(str(row["created_at"])).isoformat(timespec="milliseconds") in body
    assert LONG in body


def test_inbox_at_80_columns_keeps_its_headers_ids_and_deadlines_whole():
    tasks = [{"id": new_id(), "run_id": new_id(), "step_id": "approve_refund_for_customer",
              "title": "Refund 250.00 EUR to order A3 for a parcel that arrived broken?",
              "assignees": ["group:leads", "group:managers", "alice"], "level": n, "status": status,
              "deadline": (datetime.now(timezone.utc) + timedelta(hours=4, minutes=30)).isoformat() if n else None}
             for n, status in enumerate(("open", "approved", "expired"))]
    lines = render(tables.tasks_table(tasks))
    assert_fits(lines)
    header = lines[0]
    for column in ("task", "title", "run", "step", "assignees", "deadline", "status"):
        assert re.search(rf"\b{column}\b", header), header
    for task in tasks:
        line = next(line for line in lines if str(task["id"])[-8:] in line)
        assert str(task["run_id"])[-8:] in line and re.search(rf"\b{task['status']}\b", line), line
    assert "in 4 h" in "\n".join(lines)


def test_show_at_80_columns_keeps_times_to_the_millisecond_whole():
    started = datetime.now(timezone.utc) - timedelta(seconds=5)
    steps = [{"id": sid, "item": None, "status": status, "attempts": 1, "output": {"rows": [{"amount": 120}] * 20},
              "error": None, "started_at": started.isoformat(), "finished_at": (started + timedelta(milliseconds=1250)).isoformat()}
             for sid, status in (("lookup_the_order_in_the_order_book", "succeeded"), ("approve", "waiting"),
                                 ("refund", "cancelled"))]
    view = {"id": new_id(), "workflow": LONG, "version": 3, "status": "waiting", "steps": steps}
    lines = render(tables.steps_table(view))
    assert_fits(lines)
    clock = started.astimezone(timezone.utc).strftime("%H:%M:%S.%f")[:12]
    step_lines = [line for line in lines if clock in line]
    assert len(step_lines) == 3  # every step on one line, its start time whole
    for line, (_, status) in zip(step_lines, (("", "succeeded"), ("", "waiting"), ("", "cancelled"))):
        assert re.search(rf"\b{status}\b", line) and "1.2s" in line, line
    assert view["id"][-8:] in lines[0] or view["id"][-8:] in lines[1]


def test_audit_at_80_columns_keeps_each_event_on_one_line_with_its_time():
    at = datetime.now(timezone.utc) - timedelta(minutes=1)
    events = [{"seq": n, "at": (at + timedelta(milliseconds=n * 7)).isoformat(), "type": kind,
               "step_id": "lookup_the_order" if n else None, "actor": "cli:operator-with-a-long-name",
               "payload": {"workflow": LONG, "input": {"order_id": "A3", "message": "broken " * 30}}}
              for n, kind in enumerate(("run.submitted", "step.started", "step.succeeded", "guardrail.blocked"), 1)]
    lines = render(tables.audit_table(events))
    assert_fits(lines)
    for event in events:
        clock = datetime.fromisoformat(str(event["at"])).strftime("%H:%M:%S.%f")[:12]
        assert sum(clock in line for line in lines) == 1, clock
        line = next(line for line in lines if clock in line)
        assert str(event["type"]) in line, line


def test_keys_workflows_and_schedules_fit_80_columns():
    keys = [{"name": f"{n}-payments-service-with-a-long-name", "role": role, "groups": ["leads", "managers"],
             "created_at": iso(90), "expires_at": (datetime.now(timezone.utc) + timedelta(days=29, hours=12)).isoformat() if n else None,
             "last_used_at": iso(2), "revoked_at": None} for n, role in enumerate(("submitter", "approver", "auditor"))]
    lines = render(tables.keys_table(keys))
    assert_fits(lines)
    for key in keys:
        assert re.search(rf"\b{key['role']}\b", next(line for line in lines if line.startswith(str(key["name"])[:8])))
    assert "never" in "\n".join(lines) and "in 29 d" in "\n".join(lines)
    flows = [{"name": LONG, "version": 12, "versions": 12, "steps": 7, "description": "Refunds " * 20}]
    assert_fits(render(tables.workflows_table(flows)))
    schedules = [{"name": "nightly-refund-reconciliation", "workflow": LONG, "cron": "*/15 9-17 * * 1-5",
                  "timezone": "Europe/Amsterdam", "enabled": True, "next_run_at": (datetime.now(timezone.utc) + timedelta(minutes=9)).isoformat(),
                  "last_run_id": new_id()}]
    lines = render(tables.schedules_table(schedules))
    assert_fits(lines)
    assert "*/15 9-17 * * 1-5" in "\n".join(lines) and str(schedules[0]["last_run_id"])[-8:] in "\n".join(lines)


def test_relative_times_read_as_a_person_says_them():
    assert tables.ago(NOW - timedelta(seconds=12), now=NOW) == "12 s ago"
    assert tables.ago(NOW - timedelta(minutes=3, seconds=20), now=NOW) == "3 min ago"
    assert tables.ago(NOW - timedelta(hours=5), now=NOW) == "5 h ago"
    assert tables.ago(NOW + timedelta(hours=2, minutes=1), now=NOW) == "in 2 h"
    assert tables.ago(NOW - timedelta(days=3), now=NOW) == "3 d ago"
    assert tables.ago(NOW - timedelta(days=400), now=NOW) == (NOW - timedelta(days=400)).date().isoformat()
    assert tables.ago(None) == ""
