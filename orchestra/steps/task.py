"""``uses: task:<module.func>``: a Python function from ``tasks/``.

Functions opt in with ``@step``; only registered functions can be called by a
spec, so a spec cannot reach arbitrary code by naming it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from orchestra.errors import StepError
from orchestra.steps.base import StepCall, StepKind

F = TypeVar("F", bound=Callable[..., Any])
_REGISTRY: dict[str, Callable[..., Any]] = {}


def step(func: F) -> F:
    """Make ``func`` callable from a spec as ``task:<module>.<name>`` (module relative to ``tasks``)."""
    module = func.__module__.removeprefix("tasks.")
    _REGISTRY[f"{module}.{func.__name__}"] = func
    return func


def resolve(target: str) -> Callable[..., Any]:
    """The registered function for ``target``, importing ``tasks.<module>`` on first use."""
    if target not in _REGISTRY and "." in target:
        module = target.rsplit(".", 1)[0]
        for candidate in (f"tasks.{module}", module):  # tasks/ first, then an absolute module path
            try:
                importlib.import_module(candidate)
                break
            except ModuleNotFoundError as exc:
                if not candidate.startswith(str(exc.name)):
                    raise
    try:
        return _REGISTRY[target]
    except KeyError:
        raise StepError(
            f"no step function 'task:{target}'; define it in tasks/{target.rsplit('.', 1)[0]}.py "
            "and decorate it with @orchestra.step",
            retryable=False,
        ) from None


@lru_cache(maxsize=1024)
def _parameters(func: Callable[..., Any]) -> frozenset[str]:
    return frozenset(inspect.signature(func).parameters)


class TaskKind(StepKind):
    name = "task"

    def execute(self, call: StepCall) -> Any:
        func = resolve(call.step.target)
        kwargs = dict(call.params)
        accepted = _parameters(func)
        if "call" in accepted:
            kwargs["call"] = call
        if "item" in accepted and call.item >= 0:
            kwargs["item"] = call.context.get("item")
        return func(**kwargs)

