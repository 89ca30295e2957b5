"""What every command shares: the consoles, error reporting, JSON in and out, and short-id resolution.

Nothing here imports SQLAlchemy, Celery or redis; commands import what they need when they run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from orchestra.errors import ErrorList, OrchestraError

console = Console()
err = Console(stderr=True)

ENDED_OR_PARKED = {"succeeded", "failed", "cancelled", "waiting"}
EXIT_NOT_ENQUEUED = 3  # the run is recorded as pending and starts when Redis is back (PRODUCT.md)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def report(exc: OrchestraError) -> NoReturn:
    """Print an Orchestra error, with every item of an error list on its own line, and exit 1."""
    if isinstance(exc, ErrorList):
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        for item in exc.errors:
            loc = ".".join(str(p) for p in item.get("loc", [])) or "(root)"
            err.print(f"  [bold]{escape(loc)}[/bold]: {escape(item['msg'])}")
        raise typer.Exit(1)
    fail(exc.message)


def print_table(table: Any, *, wide: bool = False) -> None:
    """A listing at the terminal's width; with ``--wide`` at its natural width, wrapping in the terminal if it must."""
    if wide:
        console.print(table, width=max(console.width, 240), crop=False)
    else:
        console.print(table)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def parse_input(value: str) -> Any:
    """JSON text, or ``@path`` to a JSON file."""
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.exists():
            fail(f"input file {path} does not exist; pass --input @path/to/file.json or inline JSON")
        text = path.read_text()
        source = str(path)
    elif Path(value).is_file():
        text, source = Path(value).read_text(), value
    else:
        text, source = value, "--input"
    try:
        data = json.loads(text, parse_constant=lambda constant: fail(
            f"{source} contains {constant}, which is not JSON; use a number, a string or null"))
    except json.JSONDecodeError as exc:
        fail(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
             "pass a JSON object such as '{\"order_id\": \"A1\"}'")
    except RecursionError:
        fail(f"{source} nests lists or objects too deeply to read; flatten it")
    from orchestra.jsonsafe import json_problem

    problem = json_problem(data)
    if problem is not None:
        fail(f"{source} contains {problem}")
    return data


def cli_actor() -> str:
    return os.environ.get("ORCHESTRA_ACTOR") or f"cli:{os.environ.get('USER', 'operator')}"


def run_id_of(value: str) -> str:
    """The full id of the run ``value`` names (a full id or a unique prefix of 8+ characters)."""
    from orchestra.runs import get_run

    try:
        return get_run(value).id
    except OrchestraError as exc:
        report(exc)


def task_id_of(value: str) -> str:
    """The full id of the human task ``value`` names (a full id or a unique prefix of 8+ characters)."""
    from orchestra.decisions import get_task

    try:
        return get_task(value).id
    except OrchestraError as exc:
        report(exc)
