"""``uses: llm:<connector>``: ask a model for an answer that fits ``output_schema``.

``with``: ``prompt`` or ``messages``, ``system``, ``output_schema``,
``max_tokens``, ``max_invalid``. The output is ``{answer, provider, model,
tokens, latency_ms, asks}``. When the answers keep breaking the schema the step
fails, or with ``on_invalid: escalate`` parks for a person to give the answer.
"""

from __future__ import annotations

from typing import Any

from orchestra.connectors.registry import connector_for
from orchestra.connectors.llm import LlmConnector
from orchestra.errors import BudgetExceeded, InvalidAnswer
from orchestra.steps.base import StepCall, StepKind
from orchestra.steps.escalate import invalid_answer, over_budget


class LlmKind(StepKind):
    name = "llm"

    def execute(self, call: StepCall) -> Any:
        connector = connector_for(call, call.step.target, LlmConnector)
        assert isinstance(connector, LlmConnector)
        request = connector.parse_request(call, call.params)
        try:
            return connector.ask(call, request)
        except InvalidAnswer as exc:
            if call.step.on_invalid != "escalate":
                raise
            raise invalid_answer(call, exc.problem, request.output_schema) from exc
        except BudgetExceeded as exc:
            raise over_budget(call, exc, request.output_schema) from exc

