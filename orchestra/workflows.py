"""Registered workflow specs, versioned in the results database.

Registering a spec whose content changed makes a new version; registering the
same content again returns the version it already has. Specs are immutable once
stored, so a process caches them by (name, version).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from orchestra import db
from orchestra.errors import NotFound, SpecError
from orchestra.models import Workflow
from orchestra.spec import WorkflowSpec, load_spec


def register_workflow(source: str | bytes | dict[str, Any]) -> WorkflowSpec:
    """Validate and store a spec; returns it with its assigned version."""
    spec = load_spec(source)
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
            raise NotFound(f"no workflow named '{name}'; register it with `orchestra validate` + config/workflows/ or POST /v1/workflows")
    return _cached(name, version)


def list_workflows() -> list[dict[str, Any]]:
    with db.read_session() as session:
        rows = session.execute(
            select(Workflow.name, func.max(Workflow.version), func.count()).group_by(Workflow.name).order_by(Workflow.name)
        ).all()
    return [{"name": name, "version": version, "versions": count} for name, version, count in rows]


def load_config_workflows(directory: Path) -> list[WorkflowSpec]:
    """Register every ``*.yaml``/``*.yml``/``*.json`` spec under ``directory``; errors name the file."""
    loaded = []
    for path in sorted(p for p in directory.glob("*") if p.suffix in (".yaml", ".yml", ".json")):
        try:
            loaded.append(register_workflow(path.read_text()))
        except SpecError as exc:
            raise SpecError(f"{path}: {exc.message}", exc.errors) from None
    return loaded
