"""Hand a model step to a person instead of spending past a budget, failing on bad answers, or calling a tool.

The step parks on a human task (the same wait as ``uses: human``). The task's
title asks the question and its body says what approving and rejecting do.
For a model step the form is the step's ``output_schema``, so the approver
supplies the answer the model was asked for; the decision resumes the step.

What the step is for comes from its ``with.purpose`` (e.g. ``"classifying order
{{ input.order_id }}'s message"``), or else from its id and workflow.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from orchestra.steps.base import Park, StepCall

if TYPE_CHECKING:
    from orchestra.errors import BudgetExceeded

DEFAULT_APPROVERS = ["group:admins"]
SHOWN_CHARS = 600  # a prompt longer than this is shown cut, with its length


def purpose(call: StepCall) -> str:
    """What the step does, in words: its ``with.purpose``, or ``step classify of refund-request``."""
    given = call.params.get("purpose")
    if isinstance(given, str) and given.strip():
        return given.strip()
    return f"step {call.step_id} of {call.spec.name}"


def _on_reject(call: StepCall) -> str:
    if call.step.on_reject == "fail":
        return "Reject, and the run fails."
    return "Reject, and the run goes on with this step rejected."


def _prompt(call: StepCall) -> str | None:
    prompt = call.params.get("prompt")
    if not isinstance(prompt, str):
        return None
    return prompt if len(prompt) <= SHOWN_CHARS else f"{prompt[:SHOWN_CHARS]}… ({len(prompt):,} characters in all)"


def over_budget(call: StepCall, exc: BudgetExceeded, form: dict[str, Any] | None) -> Park:
    """The model call would pass a token budget: ask a person for the answer instead."""
    over = exc.used + exc.needed - exc.limit
    scope = "this run" if exc.scope == "run" else f"workflow {call.spec.name} today"
    what = purpose(call)
    title = f"{what[:1].upper()}{what[1:]} is {over:,} tokens over budget: answer in the model's place?"
    body = (f"The model call for {purpose(call)} needs up to {exc.needed:,} tokens, but {scope} has used "
            f"{exc.used:,} of its {exc.limit:,}-token budget on connector {call.step.target}, so the model was not "
            f"called.\nApprove with the answer the model was asked for, and the run goes on with it. "
            f"{_on_reject(call)}\nTo let the model spend more, raise budget.per_{exc.scope} of connector "
            f"{call.step.target} in config/connectors.yaml.")
    show = {"budget": {"scope": exc.scope, "limit": exc.limit, "used": exc.used, "needed": exc.needed,
                       "over_by": over}, "prompt": _prompt(call)}
    return escalate(call, reason="budget_exceeded", title=title, body=body, form=form, show=show)


def invalid_answer(call: StepCall, problem: str, form: dict[str, Any] | None) -> Park:
    """The model's answers kept breaking the output schema: ask a person for the answer."""
    title = f"Give the answer for {purpose(call)}? The model's answers did not fit the form"
    body = (f"The model kept answering in a shape the step cannot use: {problem}.\nApprove with the answer "
            f"yourself, and the run goes on with it. {_on_reject(call)}")
    return escalate(call, reason="invalid_answer", title=title, body=body, form=form,
                    show={"problem": problem, "prompt": _prompt(call)})


def tool_approval(call: StepCall, tool: str, uses: str, arguments: dict[str, Any],
                  approvers: list[str] | None) -> Park:
    """An agent wants to call a tool marked ``requires_approval``: ask before it runs."""
    shown = ", ".join(f"{k} {json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items()) or "no arguments"
    title = f"Let the agent call {tool} with {shown}?"
    body = (f"While {purpose(call)}, the agent asked to call {tool} ({uses}), which needs a person's approval. "
            f"Nothing has been sent yet.\nApprove, and the step goes on with your decision. {_on_reject(call)}")
    return escalate(call, reason="tool_approval", title=title, body=body, form=None, approvers=approvers,
                    show={"tool": tool, "uses": uses, "arguments": arguments})


def escalate(call: StepCall, *, reason: str, title: str, body: str, form: dict[str, Any] | None,
             approvers: list[str] | None = None, show: dict[str, Any] | None = None) -> Park:
    """Open a human task for ``call`` and return the ``Park`` the kind raises."""
    from orchestra.steps.human import announce, open_task

    shown = {"reason": reason, "connector": call.step.target, **(show or {})}
    params = {"title": title, "body": body, "show": {k: v for k, v in shown.items() if v is not None},
              "assignees": approvers or call.params.get("approvers") or DEFAULT_APPROVERS,
              **({"form": form} if form else {})}
    task = open_task(dataclasses.replace(call, params=params))
    return Park("human.requested", audit={
        "task_id": task.id, "title": task.title, "assignees": task.assignees, "reason": reason,
        "payload_hash": task.payload_hash, "deadline": task.deadline.isoformat() if task.deadline else None,
    }, after_commit=lambda: announce(task))
