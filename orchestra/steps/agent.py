"""``uses: agent:<model connector>``: a model calls the connector operations listed under ``tools``.

See ``orchestra.connectors.agent`` for the loop and its policy checks. The
output is ``{answer, iterations, tool_calls, tokens, model, provider}``.
"""

from __future__ import annotations

from typing import Any

from orchestra.connectors.agent import parse_agent, run_agent, validate_tools
from orchestra.connectors.base import connector_for
from orchestra.connectors.escalate import escalate
from orchestra.connectors.llm import LlmConnector
from orchestra.errors import BudgetExceeded
from orchestra.steps.base import StepCall, StepKind, register_kind


class AgentKind(StepKind):
    name = "agent"

    def execute(self, call: StepCall) -> Any:
        model = connector_for(call, call.step.target, LlmConnector)
        assert isinstance(model, LlmConnector)
        request = parse_agent(call)
        validate_tools(request)
        try:
            return run_agent(call, model, request)
        except BudgetExceeded as exc:
            raise escalate(call, reason="budget_exceeded", detail=exc.message, form=request.output_schema) from exc


register_kind(AgentKind())
