"""Commands about workflow specs: validate, and workflows list|show|register."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from orchestra.cli.common import console, emit_json, err, fail, print_table, report
from orchestra.cli.runs import WIDE
from orchestra.cli.tables import workflows_table
from orchestra.errors import OrchestraError

workflows_app = typer.Typer(help="Registered workflow specs: list, show, register.", no_args_is_help=True,
                            rich_markup_mode=None)


def _read(spec: Path) -> str:
    if not spec.is_file():
        fail(f"{spec} does not exist; pass the path of a YAML or JSON spec, e.g. config/workflows/example.yaml")
    return spec.read_text()


def _declared_connectors() -> list[str] | None:
    """The connectors config/connectors.yaml declares; None (not checked) when the file cannot be read."""
    from orchestra.connectors.registry import load_connectors

    try:
        return sorted(load_connectors())
    except OrchestraError as exc:
        err.print(f"[yellow]warning:[/yellow] connectors are not checked: {escape(exc.message)}")
        return None


def validate(
    spec: Path = typer.Argument(..., help="A workflow spec file (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print the list of problems as JSON ([] when valid)."),
) -> None:
    """Check a spec, reporting every problem at once.

    Task functions are resolved against tasks/ and connectors against config/connectors.yaml; exits 1 if
    there is a problem.
    """
    from orchestra.workflows import check_workflow

    text = _read(spec)
    try:
        loaded, problems = check_workflow(text, connectors=_declared_connectors())
    except OrchestraError as exc:  # the text does not parse at all
        problems, loaded = list(getattr(exc, "errors", [{"loc": [], "msg": exc.message, "type": "parse"}])), None
    if as_json:
        emit_json(problems)
        raise typer.Exit(1 if problems else 0)
    if problems or loaded is None:
        err.print(f"[red]error:[/red] {escape(str(spec))} has {len(problems)} problem{'s' if len(problems) != 1 else ''}")
        for item in problems:
            loc = ".".join(str(p) for p in item.get("loc", [])) or "(root)"
            err.print(f"  [bold]{escape(loc)}[/bold]: {escape(item['msg'])}")
        raise typer.Exit(1)
    console.print(f"[green]valid:[/green] {loaded.name} with {len(loaded.steps)} steps; "
                  f"register it with `orchestra workflows register {escape(str(spec))}`")


def workflows_list(as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """List registered workflows and their latest versions."""
    from orchestra.workflows import get_workflow, list_workflows

    rows: list[dict[str, Any]] = list_workflows()
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        latest = get_workflow(row["name"], row["version"])
        row.update(steps=len(latest.steps), description=latest.description)
    if not rows:
        console.print("[dim]no workflows; register one with `orchestra workflows register FILE`[/dim]")
        return
    print_table(workflows_table(rows, wide=wide), wide=wide)


def workflows_show(name: str = typer.Argument(..., help="The workflow's name."),
                   version: int | None = typer.Option(None, help="A specific version; default the latest."),
                   as_json: bool = typer.Option(False, "--json", help="The stored spec as JSON.")) -> None:
    """Print a registered spec (YAML, or JSON with --json)."""
    import yaml

    from orchestra.workflows import get_workflow

    try:
        spec = get_workflow(name, version)
    except OrchestraError as exc:
        report(exc)
    body = spec.canonical()
    if as_json:
        emit_json(body)
        return
    console.print(f"[bold]{escape(spec.name)}[/bold] v{spec.version} · {len(spec.steps)} steps", highlight=False)
    console.print(escape(yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=78)), highlight=False,
                  soft_wrap=True)


def workflows_register(spec: Path = typer.Argument(..., help="A workflow spec file (YAML or JSON)."),
                       as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate a spec and store it as a new version.

    The same content again keeps the version it has.
    """
    from orchestra import migrations
    from orchestra.workflows import register_workflow

    text = _read(spec)
    try:
        migrations.upgrade()
        stored = register_workflow(text)
    except OrchestraError as exc:
        report(exc)
    if as_json:
        emit_json({"name": stored.name, "version": stored.version})
        return
    console.print(f"registered [bold]{escape(stored.name)}[/bold] v{stored.version}; "
                  f"submit it with `orchestra submit {escape(stored.name)} --input '{{...}}'`")
