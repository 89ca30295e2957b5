"""The web UI in a real headless Chromium against a real server, Redis, database and workers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchestra.auth import create_key
from orchestra.decisions import get_task
from orchestra.notify import make_link
from orchestra.runs import submit_run
from tests.orchestra.waitkit import open_task_of, unique
from tests.support.harness import wait_for_run

REFUND = """
name: {name}
input_schema: {{type: object, required: [order_id], properties: {{order_id: {{type: string}}}}}}
steps:
  - {{id: lookup, uses: "task:tests.support.steps.add", with: {{a: 40, b: 2}}}}
  - id: approve
    uses: human
    with:
      title: "Refund {{{{ input.order_id }}}}?"
      body: "The customer asks for a refund of order {{{{ input.order_id }}}}."
      assignees: [group:{group}]
      show: {{amount: "{{{{ steps.lookup.output }}}}"}}
      timeout: 4h
      form:
        type: object
        required: [reason, amount]
        properties:
          reason: {{type: string, title: Reason, minLength: 3, description: Why the refund is justified}}
          amount: {{type: integer, title: Amount to refund, minimum: 1, maximum: 100}}
          channel: {{title: Tell the customer by, enum: [email, phone]}}
          urgent: {{type: boolean, title: Refund today}}
  - {{id: finish, uses: "task:tests.support.steps.add", with: {{a: "{{{{ steps.approve.output.input.amount }}}}", b: 0}}}}
"""


@pytest.fixture
def refund(register: Callable[[str], Any]) -> Iterator[tuple[str, str]]:
    """A registered refund workflow assigned to a fresh group: ``(workflow, group)``."""
    name, group = unique("ui-refund"), unique("leads")
    register(REFUND.format(name=name, group=group))
    yield name, group


def _key(role: str, groups: list[str] | None = None) -> tuple[str, str]:
    name = unique(f"ui-{role}")
    return name, create_key(name, role, groups)


def sign_in(page: Any, base: str, token: str, path: str = "/ui") -> None:
    page.goto(base + path)
    page.get_by_label("API key").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def test_an_approver_decides_in_the_browser_and_the_run_page_reaches_succeeded_live(
        server: str, browser: Any, workers: Any, refund: tuple[str, str], shoot: Callable[..., Any]) -> None:
    workflow, group = refund
    _, approver_token = _key("approver", [group])
    _, auditor_token = _key("auditor")
    approver = browser.new_context().new_page()
    approver.goto(server + "/ui")
    assert "/ui/signin" in approver.url
    shoot(approver, "01-signin")
    approver.get_by_label("API key").fill("orc_nope_wrong")
    approver.get_by_role("button", name="Sign in").click()
    assert "not valid" in approver.get_by_role("alert").inner_text()
    sign_in(approver, server, approver_token)
    assert approver.url.endswith("/ui/inbox")
    assert "Nothing is waiting for you" in approver.inner_text("main")

    # Given a run that parks on a human step while the inbox is open
    run, _ = submit_run(workflow, {"order_id": "A-17"}, actor="shop")
    assert wait_for_run(run.id)["status"] == "waiting"
    task = open_task_of(run.id)
    # Then the task appears in the open inbox without a reload
    approver.get_by_role("link", name="Refund A-17?").wait_for(timeout=15_000)
    inbox_text = approver.inner_text("#inbox-rows")
    assert "level 0" in inbox_text and "in 3h 59m" in inbox_text and f"group:{group}" in inbox_text
    shoot(approver, "02-inbox")

    # And an auditor watches the run page, which shows it waiting
    auditor = browser.new_context().new_page()
    sign_in(auditor, server, auditor_token, f"/ui/runs/{run.id}")
    assert auditor.inner_text("#run-status") == "waiting"
    assert auditor.get_by_role("button", name="Cancel run").count() == 0

    # When the approver submits the form with one invalid field
    approver.get_by_role("link", name="Refund A-17?").click()
    assert approver.url.endswith(f"/ui/tasks/{task['id']}")
    assert approver.locator("#shown dt").all_inner_texts() == ["amount"]
    assert approver.locator("#shown dd").inner_text() == "42"
    shoot(approver, "03-task")
    approver.get_by_label("Reason").fill("Parcel arrived damaged")
    approver.get_by_label("Amount to refund").fill("250")
    approver.get_by_label("Tell the customer by").select_option("email")
    approver.get_by_role("button", name="Approve").click()
    # Then the error is shown beside that field, and the other values are kept
    amount_error = approver.locator(f"#field-amount-error")
    assert "100" in amount_error.inner_text()
    assert approver.get_by_label("Amount to refund").get_attribute("aria-invalid") == "true"
    assert approver.locator("#field-reason-error").count() == 0
    assert approver.get_by_label("Reason").input_value() == "Parcel arrived damaged"
    assert get_task(task["id"]).status == "open"
    shoot(approver, "04-task-invalid")

    # When the approver fixes it and approves
    approver.get_by_label("Amount to refund").fill("42")
    approver.get_by_label("Refund today").check()
    approver.get_by_label("Comment").fill("Photos attached by the customer")
    approver.get_by_role("button", name="Approve").click()
    # Then the inbox confirms it and no longer lists the task
    assert approver.url.split("?")[0].endswith("/ui/inbox")
    assert approver.inner_text("#confirmation") == "You approved “Refund A-17?”."
    assert approver.get_by_role("link", name="Refund A-17?").count() == 0
    shoot(approver, "05-inbox-confirmed")

    # And the auditor's open run page reaches succeeded without a reload, with a verified trail
    auditor.wait_for_function("document.querySelector('#run-status').textContent.trim() === 'succeeded'",
                              timeout=30_000)
    assert "human.decided" in auditor.inner_text("table.audit")
    assert auditor.locator(".badge.verified").inner_text().startswith("✓ Verified")
    timeline = auditor.inner_text(".timeline")
    assert timeline.count("succeeded") == 3 and "1 attempt" in timeline
    auditor.get_by_text("Output of finish").click()
    assert auditor.locator("#out-finish pre").inner_text() == "42"
    shoot(auditor, "06-run-succeeded")
    view = wait_for_run(run.id, ("succeeded",))
    approve = next(s for s in view["steps"] if s["id"] == "approve")
    assert approve["output"]["input"] == {"reason": "Parcel arrived damaged", "amount": 42, "channel": "email",
                                          "urgent": True}


def test_the_runs_list_filters_by_workflow_and_status_and_pages_with_a_cursor(
        server: str, browser: Any, workers: Any, refund: tuple[str, str], shoot: Callable[..., Any]) -> None:
    workflow, _ = refund
    runs = [submit_run(workflow, {"order_id": f"L-{i}"}, actor="shop")[0] for i in range(27)]
    for run in runs:
        wait_for_run(run.id)
    _, viewer_token = _key("viewer")
    page = browser.new_context().new_page()
    sign_in(page, server, viewer_token, "/ui/runs")
    page.get_by_label("Workflow").select_option(workflow)
    page.get_by_label("Status").select_option("waiting")
    page.get_by_role("button", name="Filter").click()
    first = page.locator("#run-rows tr").count()
    assert first == 25
    assert page.locator("#run-rows").inner_text().count("waiting") == 25
    shoot(page, "07-runs")
    page.get_by_role("link", name="Next page").click()
    assert page.locator("#run-rows tr").count() == 2
    assert page.get_by_role("link", name="Next page").count() == 0
    shown = {re.search(r"run (\S+)", t).group(1) for t in page.locator("#run-rows .sr-only").all_inner_texts()}  # type: ignore[union-attr]
    assert shown == {runs[0].id, runs[1].id}
    # A viewer reads runs but not their audit trail, and cannot decide tasks
    page.goto(f"{server}/ui/runs/{runs[0].id}")
    assert page.locator("table.audit").count() == 0
    assert page.get_by_role("link", name="Inbox").count() == 0


def test_only_a_role_that_may_manage_runs_sees_cancel_and_cancelling_ends_the_run(
        server: str, browser: Any, workers: Any, refund: tuple[str, str], shoot: Callable[..., Any]) -> None:
    workflow, _ = refund
    run, _ = submit_run(workflow, {"order_id": "C-1"}, actor="shop")
    wait_for_run(run.id)
    _, admin_token = _key("admin")
    page = browser.new_context().new_page()
    sign_in(page, server, admin_token, f"/ui/runs/{run.id}")
    assert page.get_by_role("button", name="Retry failed steps").count() == 0
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel run").click()
    assert page.get_by_role("status").first.inner_text() == "The run was cancelled."
    assert page.inner_text("#run-status") == "cancelled"
    assert page.get_by_role("button", name="Cancel run").count() == 0
    shoot(page, "08-run-cancelled")
    assert wait_for_run(run.id, ("cancelled",))["status"] == "cancelled"


def test_a_signed_notification_link_lands_on_the_task_once_after_sign_in(
        server: str, browser: Any, workers: Any, refund: tuple[str, str], shoot: Callable[..., Any]) -> None:
    workflow, group = refund
    run, _ = submit_run(workflow, {"order_id": "N-5"}, actor="shop")
    wait_for_run(run.id)
    task = get_task(open_task_of(run.id)["id"])
    link = make_link(task).split("/ui/", 1)[1]
    _, token = _key("approver", [group])
    page = browser.new_context().new_page()
    page.goto(f"{server}/ui/{link}")
    assert "/ui/signin" in page.url
    sign_in_form = page.get_by_label("API key")
    sign_in_form.fill(token)
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith(f"/ui/tasks/{task.id}?via=link")
    assert page.get_by_role("heading", level=1).inner_text() == "Refund N-5?"
    assert "Opened from your notification." in page.inner_text("main")
    page.goto(f"{server}/ui/{link}")
    assert page.get_by_role("heading", level=1).inner_text() == "This link no longer works"
    shoot(page, "09-link-used")


def test_an_approver_of_another_group_cannot_open_the_task(
        server: str, browser: Any, workers: Any, refund: tuple[str, str]) -> None:
    workflow, _ = refund
    run, _ = submit_run(workflow, {"order_id": "X-9"}, actor="shop")
    wait_for_run(run.id)
    task = open_task_of(run.id)
    _, token = _key("approver", [unique("others")])
    page = browser.new_context().new_page()
    sign_in(page, server, token)
    assert page.get_by_role("link", name="Refund X-9?").count() == 0
    response = page.goto(f"{server}/ui/tasks/{task['id']}")
    assert response.status == 403
    assert "not an assignee" in page.inner_text("main")


def test_a_decision_raced_from_two_browsers_is_recorded_once_and_the_loser_is_told_who_won(
        server: str, browser: Any, workers: Any, refund: tuple[str, str], shoot: Callable[..., Any]) -> None:
    workflow, group = refund
    run, _ = submit_run(workflow, {"order_id": "R-2"}, actor="shop")
    wait_for_run(run.id)
    task = open_task_of(run.id)
    pages = []
    for _ in range(2):
        name, token = _key("approver", [group])
        page = browser.new_context().new_page()
        sign_in(page, server, token, f"/ui/tasks/{task['id']}")
        page.get_by_label("Reason").fill(f"decided by {name}")
        page.get_by_label("Amount to refund").fill("5")
        pages.append((name, page))
    (winner, first), (_, second) = pages
    first.get_by_role("button", name="Approve").click()
    assert first.inner_text("#confirmation") == "You approved “Refund R-2?”."
    second.get_by_role("button", name="Reject").click()
    assert f"already decided by {winner}" in second.get_by_role("alert").inner_text()
    assert second.locator("form.decision").count() == 0
    shoot(second, "10-race-lost")
    assert get_task(task["id"]).decided_by == winner


def test_the_skip_link_works_from_the_keyboard_and_signing_out_ends_the_session(server: str, browser: Any) -> None:
    _, token = _key("viewer")
    page = browser.new_context().new_page()
    sign_in(page, server, token)
    assert page.url.endswith("/ui/home")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.get_by_role("button", name="Sign out").click()
    assert "You are signed out." in page.inner_text("main")
    page.goto(server + "/ui/runs")
    assert "/ui/signin" in page.url
