"""The agent loop: a model picks tool calls among the connector operations a step lists.

Each tool is one fixed connector operation (``uses: http:payments`` with a
method and path, or ``uses: sql:orders`` with a query); the model only supplies
its arguments. Every call is checked before it runs: the tool must be listed,
its arguments must fit ``parameters`` (JSON Schema) and every ``constraints``
expression, and the tool's connector must be one the workflow may use. A
refusal is an audited ``guardrail.blocked`` and fails the step. A tool marked
``requires_approval`` raises ``ToolNeedsApproval``, on which the agent step kind
parks for a person, with the exact arguments in the task's payload (and so in
its hash). ``max_iterations`` and the model's
token budget bound the loop.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from typing import TYPE_CHECKING, Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestra import templates
from orchestra.call import StepCall
from orchestra.connectors.base import audit_call, block, parse_with
from orchestra.connectors.http import HttpConnector, HttpRequest
from orchestra.connectors.llm import Completion, LlmConnector, parse_answer, schema_problem
from orchestra.connectors.sql import SqlConnector, SqlQuery
from orchestra.connectors.registry import connector_for
from orchestra.errors import ConnectorError, TemplateError

if TYPE_CHECKING:
    from orchestra.connectors.base import Connector

MAX_TOOL_RESULT_CHARS = 4000


class ToolNeedsApproval(Exception):
    """The model asked for a tool marked ``requires_approval``; nothing was sent. The step parks on it."""

    def __init__(self, tool: Tool, arguments: dict[str, Any]) -> None:
        super().__init__(f"the agent wants to call {tool.name} ({tool.uses}) with "
                         f"{json.dumps(arguments, sort_keys=True)}, which needs a person's approval")
        self.tool, self.arguments = tool, arguments


class Tool(BaseModel):
    """One operation the model may call."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    uses: str = Field(pattern=r"^(http|sql):[a-z0-9_-]+$")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")  # fixed parts: method+path, or query
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    constraints: list[str] = Field(default_factory=list)  # expressions over `args`, `input`, `steps`
    requires_approval: bool = False


class AgentRequest(BaseModel):
    """A step's ``with`` for ``uses: agent:<model connector>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    tools: list[Tool] = Field(min_length=1)
    max_iterations: int = Field(default=5, ge=1, le=50)
    max_tokens: int | None = Field(default=None, ge=1)
    output_schema: dict[str, Any] | None = None
    approvers: list[str] | None = None
    purpose: str | None = None  # what the step does, in words, for the task a person sees if it escalates

    @model_validator(mode="after")
    def _one_input(self) -> AgentRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        return self


@dataclasses.dataclass(frozen=True)
class ToolCall(StepCall):
    """A step call made on the agent's behalf; its idempotency key names the tool call too."""

    suffix: str = ""

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step_id}:{self.item}:{self.suffix}"


def parse_agent(call: StepCall) -> AgentRequest:
    return parse_with(call, AgentRequest, call.params, what=call.step.uses)


def run_agent(call: StepCall, model: LlmConnector, request: AgentRequest) -> dict[str, Any]:
    """Loop model turns and tool calls until the model answers or ``max_iterations`` runs out."""
    tools = {t.name: t for t in request.tools}
    messages = _opening(request)
    log: list[dict[str, Any]] = []
    tokens = {"prompt": 0, "completion": 0, "total": 0}
    for turn in range(1, request.max_iterations + 1):
        completion = model.chat(call, messages, tools=[_tool_spec(t) for t in request.tools],
                                max_tokens=request.max_tokens)
        tokens = {k: tokens[k] + completion.usage[k] for k in tokens}
        if not completion.tool_calls:
            return {"answer": _final(call, completion, request), "iterations": turn, "tool_calls": log,
                    "tokens": tokens, "model": completion.model, "provider": completion.provider}
        messages.append(_assistant_turn(completion))
        for n, wanted in enumerate(completion.tool_calls):
            tool = _permit(call, tools, wanted)
            result = _invoke(call, tool, wanted["arguments"], f"{turn}.{n}")
            log.append({"tool": tool.name, "arguments": wanted["arguments"], "status": result.get("status")})
            messages.append({"role": "tool", "tool_call_id": wanted["id"],
                             "content": json.dumps(result, default=str)[:MAX_TOOL_RESULT_CHARS]})
    raise block(call, "agent.max_iterations", f"the agent did not finish within max_iterations="
                f"{request.max_iterations}; raise it or narrow the task", tool_calls=len(log))


def _opening(request: AgentRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    if request.messages is not None:
        return [*messages, *request.messages]
    return [*messages, {"role": "user", "content": request.prompt}]


def _tool_spec(tool: Tool) -> dict[str, Any]:
    return {"type": "function", "function": {"name": tool.name, "description": tool.description or tool.uses,
                                             "parameters": tool.parameters}}


def _assistant_turn(completion: Completion) -> dict[str, Any]:
    if completion.raw_message:
        return completion.raw_message
    return {"role": "assistant", "content": completion.content, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
        for c in completion.tool_calls]}


def _final(call: StepCall, completion: Completion, request: AgentRequest) -> Any:
    if request.output_schema is None:
        return completion.content
    try:
        answer = parse_answer(completion.content)
    except ValueError as exc:
        raise ConnectorError(f"the agent's final answer is not JSON ({exc})", retryable=False) from None
    problem = schema_problem(answer, request.output_schema)
    if problem:
        raise ConnectorError(f"the agent's final answer breaks output_schema {problem}", retryable=False)
    return answer


def _permit(call: StepCall, tools: dict[str, Tool], wanted: dict[str, Any]) -> Tool:
    """The listed tool for ``wanted``, after its arguments pass the schema and the constraints."""
    name, args = wanted["name"], wanted["arguments"]
    details = {"tool": name, "arguments": args}
    tool = tools.get(name)
    if tool is None:
        raise block(call, "agent.tools", f"the model asked for tool '{name}', which the step does not list "
                    f"(listed: {', '.join(tools)})", **details)
    problem = schema_problem(args, tool.parameters)
    if problem:
        raise block(call, "agent.parameters", f"arguments for '{name}' break its parameters schema {problem}",
                    **details)
    scope = {**call.context, "args": args}
    for expression in tool.constraints:
        try:
            allowed = templates.evaluate(expression, scope)
        except TemplateError as exc:
            allowed, why = False, exc.message
        else:
            why = f"`{expression}` is false"
        if not allowed:
            raise block(call, "agent.constraints", f"tool '{name}' refused: {why}", constraint=expression, **details)
    return tool


def _invoke(call: StepCall, tool: Tool, args: dict[str, Any], suffix: str) -> dict[str, Any]:
    kind, name = tool.uses.split(":", 1)
    connector = connector_for(call, name)
    if tool.requires_approval:
        raise ToolNeedsApproval(tool, args)
    sub = ToolCall(**{f.name: getattr(call, f.name) for f in dataclasses.fields(StepCall)}, suffix=suffix)
    result = _execute(sub, connector, kind, tool, args)
    audit_call(call, "agent.tool_called", {"tool": tool.name, "uses": tool.uses, "arguments": args,
                                           "idempotency_key": sub.idempotency_key})
    return result


def _execute(call: StepCall, connector: Connector, kind: str, tool: Tool, args: dict[str, Any]) -> dict[str, Any]:
    if kind == "sql" and isinstance(connector, SqlConnector):
        query = SqlQuery(query=str(tool.with_.get("query", "")), params=args)
        return connector.call(call, query, raw_query=tool.with_.get("query"))
    if kind == "http" and isinstance(connector, HttpConnector):
        method = str(tool.with_.get("method", "GET")).upper()
        rest = dict(args)
        path = str(tool.with_.get("path", "/"))
        for key in [k for k in rest if "{" + k + "}" in path]:
            path = path.replace("{" + key + "}", urllib.parse.quote(str(rest.pop(key)), safe=""))
        body = {"json": rest} if method in ("POST", "PUT", "PATCH") else {"params": rest}
        request = HttpRequest.model_validate({**tool.with_, "method": method, "path": path, **body})
        return connector.call(call, request)
    raise ConnectorError(f"tool '{tool.name}' uses {tool.uses}, but connector '{connector.name}' is a "
                         f"{connector.config.kind} connector; fix `uses`", retryable=False)


def validate_tools(request: AgentRequest) -> None:
    """Raise ``ConnectorError`` if a tool's parameters are not a JSON Schema."""
    for tool in request.tools:
        try:
            jsonschema.validators.validator_for(tool.parameters).check_schema(tool.parameters)
        except jsonschema.SchemaError as exc:
            raise ConnectorError(f"tool '{tool.name}' parameters is not a JSON Schema: {exc.message}",
                                 retryable=False) from None
