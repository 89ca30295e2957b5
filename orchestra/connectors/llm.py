"""The model connector: OpenAI-compatible chat completions, or the ``offline`` rules provider.

``provider: openai`` speaks ``POST {base_url}/chat/completions`` over httpx, so
it works with hosted models, vLLM and Ollama. ``provider: offline`` is not a
model: it answers from keyword rules in config, deterministically and with no
network, and every output it produces says ``provider: offline``.

A step's answer is parsed as JSON and checked against ``output_schema``; an
invalid answer is asked again with the validation error fed back, up to
``max_invalid`` times. Every completion is charged to the token budgets and
audited as ``llm.called`` with its tokens, model and latency.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx
import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from orchestra.connectors import budget, limits
from orchestra.connectors.budget import Budget
from orchestra.connectors.base import Connector, ConnectorConfig, audit_call, parse_with, read_secret
from orchestra.errors import BudgetExceeded, ConnectorError, ConnectorUnavailable, InvalidAnswer
from orchestra.redact import redact_text

if TYPE_CHECKING:
    from orchestra.call import StepCall

_FENCE = re.compile(r"^\s*```(?:json)?\s*(?P<body>.*?)\s*```\s*$", re.S)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OfflineRule(_Config):
    """Answer ``answer`` when any of ``when`` appears in the conversation (case-insensitive)."""

    when: list[str] = Field(min_length=1)
    answer: Any = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)  # [{name, arguments}], asked before answering


class LlmConfig(ConnectorConfig):
    """``kind: llm``."""

    kind: Literal["llm"]
    provider: Literal["openai", "offline"] = "openai"
    base_url: str = "https://api.openai.com/v1"
    base_url_env: str | None = None
    api_key_env: str | None = None
    model: str = ""
    temperature: float = 0.0
    max_tokens: int = Field(default=1024, ge=1)
    max_invalid: int = Field(default=2, ge=0, le=10)  # re-asks after an answer that breaks output_schema
    json_mode: bool = False  # send response_format json_object (hosted OpenAI, vLLM and Ollama support it)
    attempts: int = Field(default=3, ge=1, le=10)  # connector-level retries of connect errors, 5xx, 429
    rules: list[OfflineRule] = Field(default_factory=list)
    default: Any = None  # the offline answer when no rule matches
    budget: Budget = Field(default_factory=Budget)

    @field_validator("base_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_provider(self) -> LlmConfig:
        if self.provider == "openai" and not self.model:
            raise ValueError("`model` is required for provider openai; name the model, e.g. gpt-4o-mini")
        if self.provider == "offline" and not self.rules and self.default is None:
            raise ValueError("the offline provider needs `rules` or a `default` answer")
        return self


class LlmRequest(_Config):
    """A step's ``with`` for ``uses: llm:<name>``."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    output_schema: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_invalid: int | None = Field(default=None, ge=0, le=10)
    approvers: list[str] | None = None  # who is asked when the step escalates (on_invalid or budget)
    purpose: str | None = None  # what the step does, in words ("classifying order A3's message"), for that task

    @model_validator(mode="after")
    def _one_input(self) -> LlmRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        return self


@dataclass
class Completion:
    """One model answer."""

    content: str | None
    tool_calls: list[dict[str, Any]]  # [{id, name, arguments (dict)}]
    usage: dict[str, int]  # prompt, completion, total
    model: str
    provider: str
    latency_ms: float = 0.0
    raw_message: dict[str, Any] = field(default_factory=dict)


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A rough count (four characters a token) used to reserve budget before a call."""
    return math.ceil(sum(len(json.dumps(m.get("content") or "")) for m in messages) / 4) + 4 * len(messages)


def parse_answer(content: str | None) -> Any:
    """The JSON in ``content`` (a fenced code block is unwrapped); raise ``ValueError`` if there is none."""
    text = (content or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body")
    return json.loads(text)


def schema_problem(answer: Any, schema: dict[str, Any]) -> str | None:
    """A one-line description of how ``answer`` breaks ``schema``, or None."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(answer))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


class OfflineProvider:
    """Deterministic answers from keyword rules. Not a model; named ``offline`` wherever it answers."""

    def __init__(self, config: LlmConfig) -> None:
        self.config = config

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                 max_tokens: int) -> Completion:
        said = " ".join(str(m.get("content") or "") for m in messages if m.get("role") == "user").lower()
        answered_tools = any(m.get("role") == "tool" for m in messages)
        rule = next((r for r in self.config.rules if any(w.lower() in said for w in r.when)), None)
        answer = rule.answer if rule else self.config.default
        calls: list[dict[str, Any]] = []
        if rule and rule.tool_calls and tools and not answered_tools:
            calls = [{"id": f"offline-{i}", "name": c["name"], "arguments": c.get("arguments", {})}
                     for i, c in enumerate(rule.tool_calls)]
        content = None if calls else (answer if isinstance(answer, str) else json.dumps(answer))
        prompt = estimate_tokens(messages)
        completion = math.ceil(len(content or json.dumps(calls)) / 4)
        return Completion(content=content, tool_calls=calls, model=self.config.model or "offline-rules",
                          provider="offline", usage={"prompt": prompt, "completion": completion,
                                                     "total": prompt + completion})


class OpenAIProvider:
    """``POST /chat/completions`` on an OpenAI-compatible server."""

    def __init__(self, config: LlmConfig) -> None:
        self.config = config
        self.base_url = os.environ.get(config.base_url_env or "", "").rstrip("/") or config.base_url
        self._client = httpx.Client(timeout=httpx.Timeout(config.timeout), follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                 max_tokens: int) -> Completion:
        body: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                "temperature": self.config.temperature, "max_tokens": max_tokens}
        if tools:
            body["tools"] = tools
        elif self.config.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {}
        if self.config.api_key_env:
            key = read_secret(self.config.api_key_env, what=f"connector '{self.config.name}'")
            headers["Authorization"] = f"Bearer {key}"
        retrying = Retrying(stop=stop_after_attempt(self.config.attempts), wait=wait_exponential(0.2, max=5),
                            retry=retry_if_exception_type(ConnectorUnavailable), reraise=True)
        data = retrying(self._post, body, headers)
        return _completion(data, self.config.model)

    def _post(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        name = self.config.name
        try:
            response = self._client.post(f"{self.base_url}/chat/completions", json=body, headers=headers)
        except httpx.TransportError as exc:
            raise ConnectorUnavailable(redact_text(f"llm:{name} is unreachable: {type(exc).__name__}: {exc}")) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ConnectorUnavailable(f"llm:{name} answered {response.status_code}")
        if response.status_code >= 400:
            raise ConnectorError(f"llm:{name} answered {response.status_code}: {redact_text(response.text[:500])}",
                                 retryable=False)
        try:
            data: dict[str, Any] = response.json()
            return data
        except ValueError:
            raise ConnectorError(f"llm:{name} answered with something that is not JSON; is base_url an "
                                 "OpenAI-compatible /v1 endpoint?", retryable=False) from None


def _completion(data: dict[str, Any], model: str) -> Completion:
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise ConnectorError("the model's answer has no choices[0].message; is this an OpenAI-compatible "
                             "server?", retryable=False) from None
    calls = []
    for raw in message.get("tool_calls") or []:
        fn = raw.get("function", {})
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            arguments = {"_unparsed": fn.get("arguments")}
        calls.append({"id": raw.get("id", ""), "name": fn.get("name", ""), "arguments": arguments})
    usage = data.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return Completion(content=message.get("content"), tool_calls=calls, model=data.get("model") or model,
                      provider="openai", raw_message=message,
                      usage={"prompt": prompt, "completion": completion,
                             "total": int(usage.get("total_tokens", prompt + completion))})


class LlmConnector(Connector):
    """A model, with budgets, limits and audit around every completion."""

    config: LlmConfig

    def __init__(self, config: LlmConfig) -> None:
        super().__init__(config)
        self.provider: OfflineProvider | OpenAIProvider = (
            OfflineProvider(config) if config.provider == "offline" else OpenAIProvider(config))

    def close(self) -> None:
        if isinstance(self.provider, OpenAIProvider):
            self.provider.close()

    def parse_request(self, call: StepCall, params: dict[str, Any]) -> LlmRequest:
        return parse_with(call, LlmRequest, params, what=f"llm:{self.name}")

    def chat(self, call: StepCall, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
             max_tokens: int | None = None) -> Completion:
        """One completion, reserved against the budgets, rate-limited and audited."""
        max_tokens = max_tokens or self.config.max_tokens
        limits.take_request_token(self.config)
        reservation = self._reserve(call, estimate_tokens(messages) + max_tokens)
        started = time.monotonic()
        try:
            with limits.guarded(self.config, (self.config.timeout + 5) * self.config.attempts):
                completion = self.provider.complete(messages, tools, max_tokens)
        except BaseException:
            if reservation is not None:
                budget.settle(reservation, 0)
            raise
        completion.latency_ms = round((time.monotonic() - started) * 1000, 1)
        if reservation is not None:
            budget.settle(reservation, completion.usage["total"])
        audit_call(call, "llm.called", {"connector": self.name, "provider": completion.provider,
                                        "model": completion.model, "tokens": completion.usage,
                                        "latency_ms": completion.latency_ms, "tool_calls": len(completion.tool_calls)})
        return completion

    def _reserve(self, call: StepCall, amount: int) -> budget.Reservation | None:
        if not (self.config.budget.per_run or self.config.budget.per_workflow):
            return None
        try:
            return budget.reserve(self.config.budget, connector=self.name, run_id=call.run_id,
                                  workflow=call.spec.name, amount=amount)
        except BudgetExceeded as exc:
            audit_call(call, "budget.exceeded", {"connector": self.name, "scope": exc.scope, "limit": exc.limit,
                                                 "used": exc.used, "needed": exc.needed})
            raise

    def ask(self, call: StepCall, request: LlmRequest) -> dict[str, Any]:
        """Ask until the answer fits ``output_schema`` (or the re-asks run out)."""
        messages = _messages(request)
        spent = {"prompt": 0, "completion": 0, "total": 0}
        re_asks = self.config.max_invalid if request.max_invalid is None else request.max_invalid
        latency = 0.0
        problem, base = "", {}
        for attempt in range(1, re_asks + 2):
            completion = self.chat(call, messages, max_tokens=request.max_tokens)
            spent = {k: spent[k] + completion.usage[k] for k in spent}
            latency += completion.latency_ms
            answer, found = _check(completion.content, request.output_schema)
            base = {"provider": completion.provider, "model": completion.model, "tokens": spent,
                    "latency_ms": round(latency, 1), "asks": attempt}
            if found is None:
                return {"answer": answer, **base}
            problem = found
            audit_call(call, "llm.invalid", {"connector": self.name, "problem": problem, "ask": attempt})
            messages = [*messages, {"role": "assistant", "content": completion.content or ""},
                        {"role": "user", "content": f"That answer is invalid: {problem}. Reply again with only a "
                                                    "JSON value that satisfies the schema."}]
        raise InvalidAnswer(f"llm:{self.name} gave {re_asks + 1} answers that break the step's output_schema; "
                            f"last problem: {problem}", problem=problem, output=base)


def _messages(request: LlmRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = request.system or ""
    if request.output_schema is not None:
        system = (system + "\n\n" if system else "") + (
            "Reply with only a JSON value (no prose, no code fence) that satisfies this JSON Schema:\n"
            + json.dumps(request.output_schema))
    if system:
        messages.append({"role": "system", "content": system})
    if request.messages is not None:
        messages.extend(request.messages)
    else:
        messages.append({"role": "user", "content": request.prompt})
    return messages


def _check(content: str | None, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    if schema is None:
        return content, None
    try:
        answer = parse_answer(content)
    except ValueError as exc:
        return None, f"it is not JSON ({exc})"
    return answer, schema_problem(answer, schema)
