"""The overview, the inbox badge, search, the step timeline, local times and narrow screens, in Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import update

from orchestra import db, keys
from orchestra.auth import create_key
from orchestra.models import Run
from orchestra.runs import submit_run
from tests.orchestra.ui.test_ui import REFUND, sign_in
from tests.orchestra.waitkit import open_task_of, unique
from tests.support.harness import wait_for_run, wait_until

FAILING = """
name: {name}
steps:
  - {{id: boom, uses: "task:tests.support.steps.flaky", with: {{key: "{name}", fail_times: 9}}}}
"""
HELD = """
name: {name}
steps:
  - {{id: hold, uses: "task:tests.support.steps.gate", with: {{key: "{name}"}}}}
"""
FORK = """
name: {name}
input_schema: {{type: object, properties: {{note: {{type: string}}}}}}
steps:
  - {{id: first, uses: "task:tests.support.steps.add", with: {{a: 1, b: 2}}}}
  - {{id: left, uses: "task:tests.support.steps.gate", needs: [first], with: {{key: "{name}:left"}}}}
  - {{id: right, uses: "task:tests.support.steps.gate", needs: [first], with: {{key: "{name}:right"}}}}
  - {{id: last, uses: "task:tests.support.steps.add", needs: [left, right], with: {{a: 3, b: 4}}}}
"""
ADDS = """
name: {name}
steps:
  - {{id: sum, uses: "task:tests.support.steps.add", with: {{a: 1, b: 1}}}}
"""
NARROW = {"width": 390, "height": 844}
LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
TOOK = re.compile(r"^\d+ ms$|^\d+\.\d s$|^\d+ min \d+ s$")


def _key(role: str, groups: list[str] | None = None) -> tuple[str, str]:
    name = unique(f"ui-{role}")
    return name, create_key(name, role, groups)


def _workflow(register: Callable[[str], Any], template: str, prefix: str, **extra: str) -> str:
    name = unique(prefix)
    register(template.format(name=name, **extra))
    return name


def _shown_ids(page: Any) -> list[str]:
    """The full run ids the runs table lists, in order."""
    texts = page.locator("#run-rows .sr-only").all_inner_texts()
    return [re.search(r"run (\S+)", t).group(1) for t in texts]  # type: ignore[union-attr]


def _open_gate(key: str) -> None:
    keys.client().set(f"{key}:open", 1)


def _fits(page: Any) -> int:
    """The page's width in CSS pixels once every <details> is open (what scrolls sideways if it is too wide)."""
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    return int(page.evaluate("document.documentElement.scrollWidth"))


@pytest.fixture
def gates() -> Iterator[list[str]]:
    """Gate keys a test holds; opened at the end even if the test fails, so no worker stays held."""
    held: list[str] = []
    yield held
    for key in held:
        _open_gate(key)


def test_the_overview_counts_what_needs_attention_and_the_inbox_badge_counts_open_tasks(
        server: str, browser: Any, workers: Any, register: Callable[[str], Any], gates: list[str],
        shoot: Callable[..., Any]) -> None:
    # Given a submitter's runs: two waiting on people, one running, one failed now and one failed two days ago
    submitter, submitter_token = _key("submitter")
    group = unique("leads")
    refund = _workflow(register, REFUND, "ui-home-refund", group=group)
    failing, held = _workflow(register, FAILING, "ui-home-fail"), _workflow(register, HELD, "ui-home-hold")
    waiting = []
    for order in ("H-1", "H-2"):  # one after the other, so H-1's task is the older
        waiting.append(submit_run(refund, {"order_id": order}, actor=submitter)[0])
        assert wait_for_run(waiting[-1].id)["status"] == "waiting"
    old, recent = (submit_run(failing, {}, actor=submitter)[0] for _ in range(2))
    assert wait_for_run(old.id)["status"] == wait_for_run(recent.id)["status"] == "failed"
    with db.write_session() as session:  # two days pass for one of the failures
        session.execute(update(Run).where(Run.id == old.id)
                        .values(updated_at=datetime.now(timezone.utc) - timedelta(days=2)))
    gates.append(held)
    running, _ = submit_run(held, {}, actor=submitter)
    wait_until(lambda: keys.client().exists(f"{held}:waiting"), what="the gate step to start")
    assert wait_for_run(running.id, ("running",))["status"] == "running"

    # When the submitter opens the overview
    page = browser.new_context().new_page()
    sign_in(page, server, submitter_token)

    # Then it lands there and counts only its own runs
    assert page.url.endswith("/ui/home")
    counts = {s: page.inner_text(f"#count-{s} .number") for s in ("waiting", "failed", "running")}
    assert counts == {"waiting": "2", "failed": "1", "running": "1"}
    assert page.inner_text("#oldest-task").startswith("Refund H-1?")
    assert page.get_by_role("link", name="Refund H-1?").get_attribute("href") == f"/ui/runs/{waiting[0].id}"
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert page.request.get(server + icon).headers["content-type"] == "image/svg+xml"
    assert page.request.get(server + "/favicon.ico").status == 200
    shoot(page, "home")
    page.locator("#count-waiting").click()
    assert page.url.endswith("/ui/runs?status=waiting")
    assert page.locator("#run-rows tr").count() == 2

    # And an approver of the group sees a badge of two open tasks on Inbox, one after deciding one
    _, approver_token = _key("approver", [group])
    approver = browser.new_context().new_page()
    sign_in(approver, server, approver_token)
    assert approver.inner_text("#inbox-count") == "2"
    assert approver.get_by_role("link", name=re.compile(r"^Inbox\s+\(2 open tasks\)$")).is_visible()
    assert approver.locator("#inbox-rows dt").all_text_contents().count("Open for") == 2
    shoot(approver, "inbox")
    approver.get_by_role("link", name="Refund H-2?").click()
    approver.get_by_label("Reason").fill("Parcel never arrived")
    approver.get_by_label("Amount to refund").fill("10")
    approver.get_by_role("button", name="Approve").click()
    assert approver.url.split("?")[0].endswith("/ui/inbox")
    assert approver.inner_text("#inbox-count") == "1"
    assert approver.get_by_role("link", name=re.compile(r"^Inbox\s+\(1 open task\)$")).is_visible()


def test_search_finds_runs_by_business_key_or_by_the_start_of_their_id(
        server: str, browser: Any, workers: Any, register: Callable[[str], Any]) -> None:
    workflow = _workflow(register, ADDS, "ui-find")
    order = unique("A")
    keyed = [submit_run(workflow, {}, key=order, actor="shop")[0] for _ in range(2)]
    other = submit_run(workflow, {}, key=unique("B"), actor="shop")[0]
    _, token = _key("viewer")
    page = browser.new_context().new_page()
    sign_in(page, server, token)

    page.get_by_label("Run id or business key").fill(order)
    page.get_by_role("button", name="Find").click()

    assert _shown_ids(page) == [keyed[1].id, keyed[0].id]
    assert page.locator("#run-rows .key").all_inner_texts() == [order, order]

    page.get_by_label("Run id or business key").fill(other.id[:23])
    page.get_by_role("button", name="Filter").click()
    assert _shown_ids(page) == [other.id]
    page.get_by_label("Run id or business key").fill(other.id[:8].upper())
    page.get_by_role("button", name="Filter").click()
    prefixed = _shown_ids(page)
    assert other.id in prefixed and all(r.startswith(other.id[:8]) for r in prefixed)


def test_the_run_page_groups_parallel_steps_with_durations_and_millisecond_local_times_and_fits_390px(
        server: str, browser: Any, workers: Any, register: Callable[[str], Any], gates: list[str],
        shoot: Callable[..., Any]) -> None:
    # Given a run whose two middle steps were both held running at once, then released
    workflow = _workflow(register, FORK, "ui-fork")
    gates.extend([f"{workflow}:left", f"{workflow}:right"])
    run, _ = submit_run(workflow, {"note": "x" * 600}, key="ORDER-" + "9" * 60, actor="shop")
    wait_until(lambda: all(keys.client().exists(f"{g}:waiting") for g in gates), timeout=30,
               what="both gate steps to run at the same time")
    for gate in gates:
        _open_gate(gate)
    assert wait_for_run(run.id, ("succeeded", "failed"))["status"] == "succeeded"
    _, token = _key("auditor")
    context = browser.new_context(timezone_id="Asia/Tokyo", viewport={"width": 1280, "height": 900})
    page = context.new_page()

    # When an auditor in Tokyo opens it
    sign_in(page, server, token, f"/ui/runs/{run.id}")

    # Then the two held steps share one "at the same time" group, and the others stand alone
    groups = page.locator(".timeline > .group")
    assert groups.count() == 3
    assert page.locator(".parallel").count() == 1
    assert page.locator(".parallel .step").evaluate_all("els => els.map(e => e.dataset.step).sort()") == \
        ["left", "right"]
    assert "2 steps ran at the same time" in page.inner_text(".parallel")
    # And every step and the run show how long they took
    took = page.locator(".step .took").all_inner_texts()
    assert len(took) == 4 and all(TOOK.match(t) for t in took), took
    assert TOOK.match(page.inner_text("#run-took"))
    # And the audit trail shows local times to the millisecond, with UTC on hover
    first = page.locator("table.audit time").first
    text, utc = first.inner_text(), first.get_attribute("title")
    assert LOCAL_TIME.match(text), text
    at = datetime.fromisoformat(first.get_attribute("datetime"))
    assert utc == at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d} UTC"
    tokyo = at.astimezone(timezone(timedelta(hours=9)))
    assert text == tokyo.strftime("%Y-%m-%d %H:%M:%S.") + f"{tokyo.microsecond // 1000:03d}"
    assert "Asia/Tokyo" in page.inner_text("footer")
    shoot(page, "run-1280")
    assert _fits(page) <= 1280  # an open payload wraps inside the audit table instead of widening it

    # And at 390 px wide, with every payload open, nothing scrolls sideways
    page.set_viewport_size(NARROW)
    page.reload()
    shoot(page, "run-390")
    shoot(page, "run-390-top", full=False)
    page.locator(".parallel").scroll_into_view_if_needed()
    shoot(page, "run-390-steps", full=False)
    assert _fits(page) <= 390
    page.locator("#ev-1").scroll_into_view_if_needed()
    shoot(page, "run-390-audit-open", full=False)
    page.goto(f"{server}/ui/home")
    assert _fits(page) <= 390
    page.goto(f"{server}/ui/runs?q={run.id[:8]}")
    shoot(page, "runs-390", full=False)
    assert _fits(page) <= 390
