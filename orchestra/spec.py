"""The workflow spec: pydantic models plus the checks that need the whole graph.

``load_spec`` is the one way in. It turns YAML, JSON or a dict into a
``WorkflowSpec`` or raises ``SpecError`` whose items name the field and the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping
from functools import cached_property
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestra import templates
from orchestra.errors import SpecError
from orchestra.jsonsafe import json_problem

STEP_KINDS = ("task", "http", "sql", "llm", "agent", "human", "signal")
_USES = re.compile(r"^(?:(?P<kind>task|http|sql|llm|agent):(?P<target>[A-Za-z0-9_.\-]+)|(?P<bare>human|signal))$")
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
MAX_DURATION = 366 * 86400  # timers past a year are a typo, and overflow what Celery and Redis take


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number of seconds, or a string such as ``500ms``, ``30s``, ``4h``, ``1d``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '4h', '1d'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"'{value}' is not a duration; write it like '500ms', '30s', '5m', '4h' or '1d'")
        seconds = float(match["n"]) * _UNIT_SECONDS[match["unit"]]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"'{value}' is longer than a year (366d), the longest duration a step or a wait may have; "
                         "shorten it")
    return seconds


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RetryPolicy(_Model):
    """How a failing step is tried again: ``attempts`` in all, with exponential backoff."""

    attempts: int = Field(default=3, ge=1, le=100)
    backoff: float = 1.0
    max_backoff: float = 60.0

    _durations = field_validator("backoff", "max_backoff", mode="before")(lambda v: parse_duration(v))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * (2 ** (attempt - 1))))


class Step(_Model):
    """One step of a workflow."""

    id: str = Field(pattern=r"^[a-z0-9_]+$", max_length=100)
    uses: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] | None = None
    if_: str | None = Field(default=None, alias="if")
    for_each: str | None = None
    max_parallel: int | None = Field(default=None, ge=1, le=1000)
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy(attempts=1))
    timeout: float | None = None
    on_reject: str = Field(default="continue", pattern="^(continue|fail)$")
    on_invalid: str = Field(default="fail", pattern="^(fail|escalate)$")

    _timeout = field_validator("timeout", mode="before")(lambda v: None if v is None else parse_duration(v))

    @field_validator("uses")
    @classmethod
    def _check_uses(cls, value: str) -> str:
        if not _USES.match(value):
            raise ValueError(
                f"'{value}' is not a step kind; use task:<module.func>, http:<connector>, sql:<connector>, "
                "llm:<connector>, agent:<connector>, human or signal"
            )
        return value

    @property
    def kind(self) -> str:
        return self.uses.split(":", 1)[0]

    @property
    def target(self) -> str:
        return self.uses.split(":", 1)[1] if ":" in self.uses else ""


class WorkflowSpec(_Model):
    """A whole workflow: its input contract, the connectors it may touch, and its steps."""

    name: str = Field(pattern=r"^[a-z0-9-]+$", max_length=100)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    connectors: list[str] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1, max_length=1000)
    outputs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_needs(self) -> WorkflowSpec:
        previous: str | None = None
        fixed = []
        for step in self.steps:
            if step.needs is None:
                step = step.model_copy(update={"needs": [previous] if previous else []})
            fixed.append(step)
            previous = step.id
        object.__setattr__(self, "steps", fixed)
        return self

    @cached_property
    def by_id(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}

    @cached_property
    def order(self) -> list[str]:
        """Step ids in a topological order that keeps the spec's order where it can."""
        return topological_order(self.steps)

    @cached_property
    def dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {s.id: [] for s in self.steps}
        for s in self.steps:
            for need in s.needs or []:
                out[need].append(s.id)
        return out

    @cached_property
    def reads(self) -> dict[str, frozenset[str]]:
        """For each step, the steps whose outputs its templates and conditions read."""
        out = {}
        for s in self.steps:
            refs = templates.step_references(s.with_)
            if s.if_:
                refs |= templates.step_references(s.if_, expression=True)
            if s.for_each:
                refs |= templates.step_references(s.for_each, expression=True)
            out[s.id] = frozenset(refs)
        return out

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def digest(self) -> str:
        body = self.canonical()
        body.pop("version", None)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def topological_order(steps: list[Step]) -> list[str]:
    """Kahn's algorithm, stable in spec order. Raises ValueError naming a cycle."""
    position = {s.id: i for i, s in enumerate(steps)}
    indegree = {s.id: len(set(s.needs or [])) for s in steps}
    dependents: dict[str, list[str]] = {s.id: [] for s in steps}
    for s in steps:
        for need in set(s.needs or []):
            dependents[need].append(s.id)
    ready = sorted((sid for sid, n in indegree.items() if n == 0), key=position.__getitem__)
    order: list[str] = []
    while ready:
        sid = ready.pop(0)
        order.append(sid)
        for dep in dependents[sid]:
            indegree[dep] -= 1
            if indegree[dep] == 0:
                ready.append(dep)
                ready.sort(key=position.__getitem__)
    if len(order) != len(steps):
        stuck = [s.id for s in steps if s.id not in order]
        raise ValueError(f"steps {', '.join(stuck)} form a cycle through `needs`")
    return order


def load_spec(source: str | bytes | dict[str, Any]) -> WorkflowSpec:
    """Parse and validate a spec from YAML or JSON text, or from a dict; every problem is reported at once."""
    spec, errors = check_spec(source)
    if errors or spec is None:
        raise SpecError("the workflow spec is invalid", errors)
    return spec


TaskResolver = Callable[[str], "str | None"]


def check_spec(
    source: str | bytes | dict[str, Any],
    *,
    connectors: Collection[str] | None = None,
    resolve_task: TaskResolver | None = None,
    with_fields: Mapping[str, Collection[str]] | None = None,
) -> tuple[WorkflowSpec | None, list[dict[str, Any]]]:
    """The spec and every problem with it, structural and graph-wide, in one pass.

    Args:
        source: YAML or JSON text, or a dict.
        connectors: the connectors declared in ``config/connectors.yaml``; when given, every connector the
            spec names must be among them.
        resolve_task: given ``module.func`` of a ``task:`` step, returns why it cannot be called (or None).
        with_fields: for a step kind (``http``, ``sql``...), the fields its ``with`` may hold.

    A spec that fails the models is still checked as a graph: the steps that do validate, with stand-ins
    for those that do not, go through the graph, template, schema and ``with`` checks, so a second run of
    ``orchestra validate`` finds nothing the first did not report. Raises ``SpecError`` only when the text
    does not parse at all.
    """
    data = _parse(source)
    errors: list[dict[str, Any]] = []
    try:
        spec: WorkflowSpec | None = WorkflowSpec.model_validate(data)
        checked, stand_ins = spec, frozenset[int]()
    except ValidationError as exc:
        spec = None
        errors = _pydantic_errors(exc)
        checked, stand_ins = _stand_in(data, errors)
    if checked is not None:
        extra = (_graph_errors(checked) + _template_errors(checked) + _schema_errors(checked) + _wait_errors(checked)
                 + _with_errors(checked, with_fields) + _context_errors(checked, connectors, resolve_task))
        errors += [e for e in extra if not (len(e["loc"]) > 1 and e["loc"][0] == "steps" and e["loc"][1] in stand_ins)
                   or e["type"] in ("unknown_step", "cycle", "duplicate")]
    return (spec if not errors else None), _unique(errors)


def _unique(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for error in errors:
        key = (json.dumps(error["loc"], default=str), error["msg"])
        if key not in seen:
            seen.add(key)
            out.append(error)
    return out


def _stand_in(data: dict[str, Any], errors: list[dict[str, Any]]) -> tuple[WorkflowSpec | None, frozenset[int]]:
    """A spec for the graph checks when the models refused ``data``: bad top-level fields take their
    defaults and a step that fails its model becomes a stand-in keeping only its id and needs."""
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        return None, frozenset()
    bad_top = {e["loc"][0] for e in errors if e["loc"] and e["loc"][0] != "steps"}
    top = {k: v for k, v in data.items() if k not in bad_top and k != "steps"}
    top.setdefault("name", "invalid")
    steps: list[Any] = []
    stand_ins: set[int] = set()
    for i, raw in enumerate(raw_steps):
        try:
            Step.model_validate(raw)
            steps.append(raw)
            continue
        except ValidationError:
            stand_ins.add(i)
        raw = raw if isinstance(raw, dict) else {}
        sid = raw.get("id") if isinstance(raw.get("id"), str) and re.fullmatch(r"[a-z0-9_]+", raw["id"]) else f"_step_{i}"
        needs = raw.get("needs")
        needs = needs if isinstance(needs, list) and all(isinstance(n, str) for n in needs) else None
        steps.append({"id": sid, "uses": "human", "with": {"assignees": ["stand-in"]}, "needs": needs})
    try:
        return WorkflowSpec.model_validate({**top, "steps": steps}), frozenset(stand_ins)
    except ValidationError:
        return None, frozenset()


def _parse(source: str | bytes | dict[str, Any]) -> Any:
    if isinstance(source, dict):
        return source
    try:
        data = yaml.safe_load(source)
    except RecursionError:
        raise SpecError("the workflow spec is nested too deeply", [
            {"loc": [], "msg": "the spec nests lists or mappings too deeply to read; flatten it", "type": "parse"}]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(
            "the workflow spec is not valid YAML or JSON",
            [{"loc": [], "msg": f"cannot parse the spec{where}: {getattr(exc, 'problem', exc)}; fix the syntax", "type": "parse"}],
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            "the workflow spec must be a mapping",
            [{"loc": [], "msg": "the spec must be a mapping with name, steps and the other fields", "type": "type"}],
        )
    problem = json_problem(data)
    if problem is not None:
        raise SpecError("the workflow spec is invalid", [{"loc": [], "type": "not_json",
                                                          "msg": f"the spec contains {problem}"}])
    return data


_HINTS = {
    "missing": "add this field",
    "extra_forbidden": "remove it or check its spelling",
    "string_pattern_mismatch": "use only the allowed characters",
}


def _pydantic_errors(exc: ValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        msg = err["msg"].removeprefix("Value error, ")
        hint = _HINTS.get(err["type"])
        if err["type"] == "string_pattern_mismatch":
            field = loc[-1] if loc else ""
            msg = f"{err['input']!r} is not allowed here"
            hint = {
                "name": "use lowercase letters, digits and '-', e.g. refund-request",
                "id": "use lowercase letters, digits and '_', e.g. lookup_order",
            }.get(str(field), hint)
        out.append({"loc": loc, "msg": f"{msg}; {hint}" if hint else msg, "type": err["type"]})
    return out


def _graph_errors(spec: WorkflowSpec) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        if step.id in seen:
            errors.append({"loc": ["steps", i, "id"], "type": "duplicate",
                           "msg": f"step id '{step.id}' is already used by steps[{seen[step.id]}]; give each step a unique id"})
        seen.setdefault(step.id, i)
    for i, step in enumerate(spec.steps):
        for j, need in enumerate(step.needs or []):
            if need not in seen:
                errors.append({"loc": ["steps", i, "needs", j], "type": "unknown_step",
                               "msg": f"needs '{need}', which is not a step id; use one of: {', '.join(seen)}"})
            elif need == step.id and seen[step.id] == i:  # a repeated id following its twin is reported above
                errors.append({"loc": ["steps", i, "needs", j], "type": "cycle",
                               "msg": f"step '{step.id}' needs itself; remove it from its own needs"})
        kind, target = step.kind, step.target
        if kind in ("http", "sql", "llm", "agent") and target not in spec.connectors:
            errors.append({"loc": ["steps", i, "uses"], "type": "connector_not_allowed",
                           "msg": f"connector '{target}' is not in this workflow's `connectors` list; add it there"})
        if step.max_parallel is not None and step.for_each is None:
            errors.append({"loc": ["steps", i, "max_parallel"], "type": "max_parallel_without_for_each",
                           "msg": "max_parallel only applies to a for_each step; add for_each or remove max_parallel"})
    cycle = _cycle(spec.steps)
    if cycle:
        errors.append({"loc": ["steps"], "type": "cycle",
                       "msg": f"steps {' -> '.join(cycle)} form a cycle through `needs`; remove one of those needs"})
    return errors


def _cycle(steps: list[Step]) -> list[str]:
    """One cycle through ``needs`` (ids in order, the first repeated at the end), ignoring unknown needs,
    self-needs and repeated ids, which are reported on their own; empty when there is none."""
    needs: dict[str, list[str]] = {}
    for step in steps:
        needs.setdefault(step.id, [])
    for step in steps:
        needs[step.id] += [n for n in step.needs or [] if n in needs and n != step.id]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(sid: str, path: list[str]) -> list[str]:
        state[sid] = 1
        path.append(sid)
        for need in needs[sid]:
            if state.get(need) == 1:
                return [*path[path.index(need):], need]
            if need not in state:
                found = visit(need, path)
                if found:
                    return found
        path.pop()
        state[sid] = 2
        return []

    for sid in needs:
        if sid not in state:
            found = visit(sid, [])
            if found:
                return list(reversed(found))
    return []


def _with_errors(spec: WorkflowSpec, with_fields: Mapping[str, Collection[str]] | None) -> list[dict[str, Any]]:
    """What can be checked of a connector step's ``with`` before it runs; its fields when ``with_fields`` names
    them for the step's kind (the connectors' request models, passed in so that the spec stays free of I/O)."""
    errors: list[dict[str, Any]] = []
    for i, step in enumerate(spec.steps):
        allowed = sorted(with_fields.get(step.kind, ())) if with_fields is not None else []
        if not allowed:
            continue
        loc: list[Any] = ["steps", i, "with"]
        for key in sorted(set(step.with_) - set(allowed)):
            errors.append({"loc": [*loc, key], "type": "extra_forbidden",
                           "msg": f"`uses: {step.kind}:` has no field '{key}'; use one of: {', '.join(allowed)}"})
        if step.kind == "sql":
            query = step.with_.get("query")
            if not isinstance(query, str) or not query.strip():
                errors.append({"loc": [*loc, "query"], "type": "missing",
                               "msg": "a sql step needs `query`: one SQL statement with :name placeholders"})
            elif templates.is_template(query):
                errors.append({"loc": [*loc, "query"], "type": "sql_template",
                               "msg": "the query is a template, which could splice input into SQL; write :name "
                                      "placeholders and pass the values under `params`"})
        if step.kind in ("llm", "agent") and "prompt" not in step.with_ and "messages" not in step.with_:
            errors.append({"loc": loc, "type": "missing", "msg": f"an {step.kind} step needs `prompt` or `messages`"})
    return errors


def _context_errors(spec: WorkflowSpec, connectors: Collection[str] | None,
                    resolve_task: TaskResolver | None) -> list[dict[str, Any]]:
    """Names the spec takes from outside it: declared connectors and ``task:`` functions."""
    errors: list[dict[str, Any]] = []
    if connectors is not None:
        declared = ", ".join(sorted(connectors)) or "none"
        for j, name in enumerate(spec.connectors):
            if name not in connectors:
                errors.append({"loc": ["connectors", j], "type": "unknown_connector",
                               "msg": f"connector '{name}' is not declared in config/connectors.yaml; declare it "
                                      f"there or use one of: {declared}"})
    if resolve_task is not None:
        for i, step in enumerate(spec.steps):
            if step.kind == "task":
                problem = resolve_task(step.target)
                if problem:
                    errors.append({"loc": ["steps", i, "uses"], "type": "unknown_task", "msg": problem})
    return errors


def _template_errors(spec: WorkflowSpec) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    ids = set(spec.by_id)

    def check(value: Any, loc: list[Any], *, expression: bool = False) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                check(v, [*loc, k])
            return
        if isinstance(value, list):
            for n, v in enumerate(value):
                check(v, [*loc, n])
            return
        if not isinstance(value, str) or not (expression or templates.is_template(value)):
            return
        try:
            if expression:
                templates.check_expression(value)
            else:
                templates.check_template(value)
            refs = templates.step_references(value, expression=expression)
        except TemplateSyntaxError as exc:
            what = "expression" if expression else "template"
            errors.append({"loc": loc, "type": "template",
                           "msg": f"{what} `{value}` does not parse: {exc.message}; check its braces and syntax"})
            return
        for ref in sorted(refs - ids):
            errors.append({"loc": loc, "type": "unknown_step",
                           "msg": f"refers to steps.{ref}, which is not a step id; use one of: {', '.join(sorted(ids))}"})

    for i, step in enumerate(spec.steps):
        check(step.with_, ["steps", i, "with"])
        if step.if_:
            check(step.if_, ["steps", i, "if"], expression=True)
        if step.for_each:
            check(step.for_each, ["steps", i, "for_each"], expression=True)
    check(spec.outputs, ["outputs"])
    return errors


def _schema_errors(spec: WorkflowSpec) -> list[dict[str, Any]]:
    import jsonschema  # a fifth of a second to import; only validation needs it

    errors: list[dict[str, Any]] = []
    schemas: list[tuple[list[Any], Any]] = [(["input_schema"], spec.input_schema)]
    for i, step in enumerate(spec.steps):
        for key in ("form", "schema", "output_schema"):
            if key in step.with_:
                schemas.append((["steps", i, "with", key], step.with_[key]))
    for loc, schema in schemas:
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            errors.append({"loc": [*loc, *exc.absolute_path], "type": "json_schema",
                           "msg": f"not a valid JSON Schema{' at ' + where if where else ''}: {exc.message}; "
                                  "see https://json-schema.org/understanding-json-schema"})
        except Exception as exc:  # noqa: BLE001 - a schema so malformed that jsonschema cannot classify it
            errors.append({"loc": loc, "type": "json_schema", "msg": f"not a valid JSON Schema: {exc}; use a JSON object"})
    return errors


_WAIT_FIELDS = {
    "human": ("title", "body", "assignees", "form", "show", "timeout", "escalate", "quorum", "four_eyes"),
    "signal": ("name", "schema", "timeout"),
}
_SIGNAL_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _wait_errors(spec: WorkflowSpec) -> list[dict[str, Any]]:
    """Check the ``with`` of ``uses: human`` and ``uses: signal`` steps."""
    errors: list[dict[str, Any]] = []
    for i, step in enumerate(spec.steps):
        if step.kind not in _WAIT_FIELDS:
            continue
        loc: list[Any] = ["steps", i, "with"]
        allowed = _WAIT_FIELDS[step.kind]
        for key in sorted(set(step.with_) - set(allowed)):
            errors.append({"loc": [*loc, key], "type": "extra_forbidden",
                           "msg": f"`uses: {step.kind}` has no field '{key}'; use one of: {', '.join(allowed)}"})
        errors += _duration_error(step.with_.get("timeout"), [*loc, "timeout"])
        errors += _human_errors(step.with_, loc) if step.kind == "human" else _signal_errors(step.with_, loc)
    return errors


def _duration_error(value: Any, loc: list[Any]) -> list[dict[str, Any]]:
    if value is None or (isinstance(value, str) and templates.is_template(value)):
        return []
    try:
        parse_duration(value)
    except ValueError as exc:
        return [{"loc": loc, "type": "duration", "msg": str(exc)}]
    return []


def _human_errors(with_: dict[str, Any], loc: list[Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    assignees = with_.get("assignees")
    if not (isinstance(assignees, str) and templates.is_template(assignees)) and (
            not isinstance(assignees, list) or not assignees or not all(isinstance(a, str) and a for a in assignees)):
        errors.append({"loc": [*loc, "assignees"], "type": "assignees",
                       "msg": "a human step needs `assignees`: a list of user names and group:<name> entries, "
                              "e.g. [alice, group:leads]"})
    quorum = with_.get("quorum", 1)
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
        errors.append({"loc": [*loc, "quorum"], "type": "quorum",
                       "msg": f"quorum {quorum!r} is not a whole number of approvers; use 1 or more"})
    if not isinstance(with_.get("four_eyes", False), bool):
        errors.append({"loc": [*loc, "four_eyes"], "type": "bool", "msg": "four_eyes is true or false"})
    return errors + _escalate_errors(with_.get("escalate"), [*loc, "escalate"])


def _escalate_errors(chain: Any, loc: list[Any]) -> list[dict[str, Any]]:
    if chain is None:
        return []
    if not isinstance(chain, list):
        return [{"loc": loc, "type": "escalate", "msg": "escalate is a list such as "
                 "[{after: 4h, to: [group:managers]}, {after: 24h, action: reject}]"}]
    errors: list[dict[str, Any]] = []
    last = -1.0
    for n, entry in enumerate(chain):
        where = [*loc, n]
        if not isinstance(entry, dict) or "after" not in entry or ("to" in entry) == ("action" in entry):
            errors.append({"loc": where, "type": "escalate", "msg": "each entry is {after, to: [...]} or "
                           "{after, action: approve|reject|fail}, with exactly one of `to` and `action`"})
            continue
        if set(entry) - {"after", "to", "action"}:
            errors.append({"loc": where, "type": "extra_forbidden",
                           "msg": f"unknown keys {sorted(set(entry) - {'after', 'to', 'action'})}; use after, to or action"})
        duration = _duration_error(entry["after"], [*where, "after"])
        errors += duration
        if not duration and not (isinstance(entry["after"], str) and templates.is_template(entry["after"])):
            after = parse_duration(entry["after"])
            if after <= last:
                errors.append({"loc": [*where, "after"], "type": "escalate_order",
                               "msg": "each `after` counts from when the task opened; make it later than the entry before"})
            last = after
        if "to" in entry and (not isinstance(entry["to"], list) or not entry["to"]):
            errors.append({"loc": [*where, "to"], "type": "assignees",
                           "msg": "`to` is a non-empty list of users and group:<name> entries"})
        if "action" in entry and entry["action"] not in ("approve", "reject", "fail"):
            errors.append({"loc": [*where, "action"], "type": "enum",
                           "msg": f"action {entry['action']!r} is not allowed; use approve, reject or fail"})
        if "action" in entry and n != len(chain) - 1:
            errors.append({"loc": where, "type": "escalate_order",
                           "msg": "an `action` entry ends the wait, so it must be the last entry; move it to the end"})
    return errors


def _signal_errors(with_: dict[str, Any], loc: list[Any]) -> list[dict[str, Any]]:
    name = with_.get("name")
    if not isinstance(name, str) or not _SIGNAL_NAME.match(name):
        return [{"loc": [*loc, "name"], "type": "signal_name",
                 "msg": "a signal step needs a fixed `name` of letters, digits, '_', '.' or '-', e.g. payment"}]
    return []
