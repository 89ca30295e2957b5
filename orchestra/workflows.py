"""Registering workflow specs: every problem found in one pass, then a new version stored.

Reading them back is ``orchestra.catalog``'s (``get_workflow``, re-exported here).

Registering a spec whose content changed makes a new version; registering the
same content again returns the version it already has. Specs are immutable once
stored, so a process caches them by (name, version).
"""

from __future__ import annotations

import importlib
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select

from orchestra import db
from orchestra.errors import NotFound, SpecError
from orchestra.models import Workflow
from orchestra.catalog import REGISTER_HINT, get_workflow, list_workflows
from orchestra.spec import WorkflowSpec, check_spec



def task_problem(target: str) -> str | None:
    """Why ``task:<target>`` cannot be called, naming the fix; None when it resolves to a ``@step`` function.

    Imports ``tasks.<module>`` (or ``<module>``) as a worker would, so a spec naming a function that does not
    exist is refused when it is validated or registered, not when a run reaches the step.
    """
    from orchestra.steps import task as task_kind

    if "." not in target:
        return (f"'task:{target}' names no module; write task:<module>.<function>, e.g. task:examples.normalize "
                "for normalize() in tasks/examples.py")
    module, func = target.rsplit(".", 1)
    if target in task_kind._REGISTRY:
        return None
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `celery -A workers.app` does: modules beside tasks/ resolve too
    loaded = None
    for candidate in (f"tasks.{module}", module):
        try:
            loaded = importlib.import_module(candidate)
            break
        except ModuleNotFoundError as exc:
            if not candidate.startswith(str(exc.name)):
                return f"tasks/{module.replace('.', '/')}.py cannot be imported: {exc}; install what it imports"
        except Exception as exc:  # noqa: BLE001 - any error in the user's module is the problem to report
            return f"{candidate} cannot be imported ({type(exc).__name__}: {exc}); fix that module"
    if loaded is None:
        return (f"no module '{module}' for 'task:{target}': create tasks/{module.replace('.', '/')}.py with "
                f"`@orchestra.step def {func}(...)`, or fix the module name")
    if target in task_kind._REGISTRY:
        return None
    defined = sorted(name.rsplit(".", 1)[1] for name in task_kind._REGISTRY if name.rsplit(".", 1)[0] == module)
    if callable(getattr(loaded, func, None)):
        return f"{func}() in {loaded.__name__.replace('.', '/')}.py is not a step; decorate it with @orchestra.step"
    where = f"{loaded.__name__.replace('.', '/')}.py"
    return (f"{where} has no step function '{func}'; define `@orchestra.step def {func}(...)` there"
            + (f", or use one of: {', '.join(defined)}" if defined else ""))


def check_workflow(source: str | bytes | dict[str, Any], *,
                   connectors: list[str] | None = None) -> tuple[WorkflowSpec | None, list[dict[str, Any]]]:
    """Every problem with a spec in one pass, ``task:`` functions resolved; with ``connectors``, also every
    connector the spec names checked against those declared (``orchestra validate`` passes config/connectors.yaml's)."""
    return check_spec(source, connectors=connectors, resolve_task=task_problem, with_fields=with_fields())


@lru_cache(maxsize=1)
def with_fields() -> dict[str, frozenset[str]]:
    """The fields each connector step kind's ``with`` may hold, read from the connectors' request models."""
    import orchestra.steps  # noqa: F401 - the step kinds first: connectors.agent and steps.agent import each other
    from orchestra.connectors.agent import AgentRequest
    from orchestra.connectors.http import HttpRequest
    from orchestra.connectors.llm import LlmRequest
    from orchestra.connectors.sql import SqlQuery

    models: dict[str, type[BaseModel]] = {"http": HttpRequest, "sql": SqlQuery, "llm": LlmRequest, "agent": AgentRequest}
    return {kind: frozenset(field.alias or name for name, field in model.model_fields.items())
            for kind, model in models.items()}


def register_workflow(source: str | bytes | dict[str, Any]) -> WorkflowSpec:
    """Validate (every problem at once, ``task:`` functions resolved) and store a spec; returns it with its version."""
    spec, errors = check_workflow(source)
    if errors or spec is None:
        raise SpecError("the workflow spec is invalid", errors)
    digest = spec.digest()
    with db.write_session() as session:
        latest = session.scalars(
            select(Workflow).where(Workflow.name == spec.name).order_by(Workflow.version.desc()).limit(1)
        ).first()
        if latest is not None and latest.spec_hash == digest and spec.version in (None, latest.version):
            return spec.model_copy(update={"version": latest.version})
        version = (latest.version + 1) if latest else 1
        if spec.version is not None and spec.version > version:
            version = spec.version
        if spec.version is not None and latest is not None and spec.version <= latest.version:
            raise SpecError(
                "the workflow spec is invalid",
                [{"loc": ["version"], "type": "version_conflict",
                  "msg": f"version {spec.version} of '{spec.name}' exists with other content; "
                         f"raise it above {latest.version} or leave `version` out to get the next one"}],
            )
        stored = spec.model_copy(update={"version": version})
        session.add(Workflow(name=spec.name, version=version, spec=stored.canonical(), spec_hash=digest))
    return stored


def load_config_workflows(directory: Path) -> list[WorkflowSpec]:
    """Register every ``*.yaml``/``*.yml``/``*.json`` spec under ``directory``; errors name the file."""
    loaded = []
    for path in sorted(p for p in directory.glob("*") if p.suffix in (".yaml", ".yml", ".json")):
        try:
            loaded.append(register_workflow(path.read_text()))
        except SpecError as exc:
            raise SpecError(f"{path}: {exc.message}", exc.errors) from None
    return loaded
