"""Tasks a step opens for a person (over budget, a tool to approve) say what is asked, and fit a phone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orchestra.auth import create_key
from orchestra.decisions import list_tasks
from orchestra.steps.base import Park
from orchestra.steps.kinds import get_kind
from tests.orchestra.connectors.conftest import audit_of, connectors, make_call  # noqa: F401 - fixtures
from tests.orchestra.ui.test_ui import sign_in
from tests.orchestra.waitkit import unique

MODEL = """
connectors:
  model:
    kind: llm
    provider: offline
    model: offline-rules
    max_tokens: 256
    budget: {per_run: 4000}
    default: {category: other}
"""
SPEC = """
name: ui-budget
connectors: [model]
steps:
  - id: classify
    uses: llm:model
    on_reject: fail
    with: {prompt: "{{ input.message }}", output_schema: {type: object}}
"""
FORM = {"type": "object", "required": ["category"],
        "properties": {"category": {"type": "string", "enum": ["refund", "billing", "other"]}}}


def test_a_call_over_the_token_budget_asks_a_person_in_words_and_shows_the_numbers_as_a_list(
        server: str, browser: Any, connectors: Callable[[str], None],  # noqa: F811
        make_call: Callable[..., Any], shoot: Callable[..., Any]) -> None:  # noqa: F811
    connectors(MODEL)
    group = unique("leads")
    message = "money back! " * 2000
    call = make_call(SPEC, "classify", {"prompt": f"Classify this message about order A3: {message}",
                                        "purpose": "classifying order A3's message", "output_schema": FORM,
                                        "approvers": [f"group:{group}"]})

    with pytest.raises(Park):
        get_kind("llm").execute(call)

    exceeded = next(e["payload"] for e in audit_of(call.run_id) if e["type"] == "budget.exceeded")
    over = exceeded["used"] + exceeded["needed"] - 4000
    assert over > 1000
    [task] = [t for t in list_tasks("lee", [group]) if t["run_id"] == call.run_id]
    assert task["title"] == f"Classifying order A3's message is {over:,} tokens over budget: answer in the model's place?"
    assert f"needs up to {exceeded['needed']:,} tokens" in task["body"]
    assert "raise budget.per_run of connector model" in task["body"] and "Reject, and the run fails." in task["body"]

    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    sign_in(page, server, create_key(unique("lee"), "approver", [group]), f"/ui/tasks/{task['id']}")
    assert page.get_by_role("heading", level=1).inner_text() == task["title"]
    facts = dict(zip(page.locator("#shown dl.kv dl.kv dt").all_inner_texts(),
                     page.locator("#shown dl.kv dl.kv dd").all_inner_texts()))
    assert facts == {"scope": "run", "limit": "4000", "used": "0", "needed": str(exceeded["needed"]),
                     "over_by": str(over)}
    assert "show all" in page.locator("#shown details.long summary").inner_text()
    assert page.get_by_label("Category").count() == 1
    shoot(page, "budget-task-390", full=False)
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
