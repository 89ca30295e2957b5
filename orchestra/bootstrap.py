"""Bringing a process up to date with the database and config/: migrations, then workflow specs."""

from __future__ import annotations

from orchestra import migrations
from orchestra.settings import get_settings
from orchestra.spec import WorkflowSpec
from orchestra.workflows import load_config_workflows


def bootstrap() -> list[WorkflowSpec]:
    """Apply migrations and register the specs under ``config/workflows``; returns those specs."""
    migrations.upgrade()
    directory = get_settings().workflows_dir
    specs = load_config_workflows(directory) if directory.exists() else []
    from orchestra.schedules import load_config_schedules

    load_config_schedules(get_settings().config_dir / "schedules.yaml")
    return specs
