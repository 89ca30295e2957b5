"""Templates and conditions, evaluated by Jinja2's sandbox, never by ``eval``.

A string that is exactly one ``{{ expression }}`` keeps the expression's native
type, so ``{{ input.amount }}`` stays a number. Any other string renders as text.
Conditions (``if``) and ``for_each`` are bare expressions.
"""

from __future__ import annotations

import re
from functools import lru_cache
from collections.abc import Iterable
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from orchestra.errors import TemplateError

class _DataFirstEnvironment(ImmutableSandboxedEnvironment):
    """``input.items`` means the key ``items``, not the dict method: data wins over attributes."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _DataFirstEnvironment(undefined=StrictUndefined, autoescape=False)
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.S)


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def check_template(text: str) -> None:
    """Raise ``TemplateSyntaxError`` if ``text`` does not parse."""
    _ENV.parse(text)


def check_expression(expr: str) -> None:
    """Raise ``TemplateSyntaxError`` if ``expr`` is not one valid expression."""
    _compiled_expression(expr)


@lru_cache(maxsize=4096)
def _compiled_expression(expr: str) -> Any:
    return _ENV.compile_expression(expr, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _compiled_template(text: str) -> Any:
    return _ENV.from_string(text)


def evaluate(expr: str, context: dict[str, Any]) -> Any:
    """The native value of expression ``expr``."""
    try:
        return _unwrap(_compiled_expression(expr)(**context))
    except (UndefinedError, SecurityError, TemplateSyntaxError, TypeError, ValueError, LookupError, ArithmeticError) as exc:
        raise TemplateError(f"expression `{expr}` failed: {exc}") from exc


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render every template string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        single = _SINGLE.match(value)
        if single:
            return evaluate(single.group("expr"), context)
        try:
            return _compiled_template(value).render(**context)
        except (UndefinedError, SecurityError, TypeError, ValueError, LookupError, ArithmeticError) as exc:
            raise TemplateError(f"template `{value}` failed: {exc}") from exc
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, StrictUndefined):
        str(value)  # raises UndefinedError with jinja's own message
    return value


def step_references(value: Any, *, expression: bool = False) -> set[str]:
    """Names of the steps that ``value`` reads through ``steps.<id>``."""
    found: set[str] = set()
    if isinstance(value, dict):
        for v in value.values():
            found |= step_references(v)
        return found
    if isinstance(value, list):
        for v in value:
            found |= step_references(v)
        return found
    if not isinstance(value, str) or not (expression or is_template(value)):
        return found
    source = "{{ " + value + " }}" if expression else value
    for node in _ENV.parse(source).find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, (nodes.Getattr, nodes.Getitem))
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "steps":
            if isinstance(node, nodes.Getattr):
                found.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.add(node.arg.value)
    return found


def step_context(run: Any, rows: Iterable[Any], item: Any = None) -> dict[str, Any]:
    """What templates and conditions see: the run's input, each top-level step's output and status, ``item``."""
    steps = {r.step_id: {"output": r.output, "status": r.status} for r in rows if r.item < 0}
    return {"input": run.input, "steps": steps, "item": item,
            "run": {"id": run.id, "workflow": run.workflow, "version": run.version, "submitted_by": run.submitted_by}}
