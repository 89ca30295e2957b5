"""``uses: agent:<model connector>``: a model calls the connector operations listed under ``tools``.

See ``orchestra.connectors.agent`` for the loop and its policy checks. The
output is ``{answer, iterations, tool_calls, tokens, model, provider}``.
"""

from __future__ import annotations

from typing import Any

from orchestra.connectors.agent import ToolNeedsApproval, parse_agent, run_agent, validate_tools
from orchestra.connectors.registry import connector_for
from orchestra.connectors.llm import LlmConnector
from orchestra.errors import BudgetExceeded
from orchestra.steps.base import StepCall, StepKind
from orchestra.steps.escalate import over_budget, tool_approval


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
            raise over_budget(call, exc, request.output_schema) from exc
        except ToolNeedsApproval as exc:
            raise tool_approval(call, exc.tool.name, exc.tool.uses, exc.arguments, request.approvers) from exc

