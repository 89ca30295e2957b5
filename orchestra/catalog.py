"""The registered workflow specs, read back by name and version from the results database.

Specs are immutable once stored, so a process caches them by (name, version).
Registering them (``orchestra.workflows``) checks step kinds and connectors;
reading them needs neither, so the runtime's lower layers read from here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import func, select

from orchestra import db
from orchestra.errors import NotFound
from orchestra.models import Workflow
from orchestra.spec import WorkflowSpec

REGISTER_HINT = ("register it with `orchestra workflows register FILE`, put it under config/workflows/, "
                 "or POST /v1/workflows")


@lru_cache(maxsize=512)
def _cached(name: str, version: int) -> WorkflowSpec:
    with db.read_session() as session:
        row = session.scalars(select(Workflow).where(Workflow.name == name, Workflow.version == version)).first()
        if row is None:
            raise NotFound(f"workflow '{name}' has no version {version}")
        return WorkflowSpec.model_validate(row.spec)


def get_workflow(name: str, version: int | None = None) -> WorkflowSpec:
    """A stored spec; the latest version when ``version`` is None."""
    if version is None:
        with db.read_session() as session:
            version = session.scalar(select(func.max(Workflow.version)).where(Workflow.name == name))
        if version is None:
            raise NotFound(f"no workflow named '{name}'; {REGISTER_HINT}")
    return _cached(name, version)


def list_workflows() -> list[dict[str, Any]]:
    with db.read_session() as session:
        rows = session.execute(
            select(Workflow.name, func.max(Workflow.version), func.count()).group_by(Workflow.name).order_by(Workflow.name)
        ).all()
    return [{"name": name, "version": version, "versions": count} for name, version, count in rows]


__all__ = ["REGISTER_HINT", "get_workflow", "list_workflows"]
