"""Commands about human tasks: inbox and decide."""

from __future__ import annotations

import typer
from rich.markup import escape

from orchestra.cli.common import cli_actor, console, emit_json, parse_input, print_table, report, task_id_of
from orchestra.cli.runs import WIDE
from orchestra.cli.tables import tasks_table
from orchestra.errors import OrchestraError


def _decider(as_user: str | None, groups: list[str] | None) -> tuple[str, list[str], bool]:
    """Without ``--as`` the CLI acts as the local operator, who sees and may decide every task."""
    if as_user:
        return as_user, list(groups or []), False
    return cli_actor(), list(groups or []), True


def inbox(
    as_user: str | None = typer.Option(None, "--as", help="Act as this user (default: the operator, who sees all)."),
    group: list[str] | None = typer.Option(None, "--group", "-g", help="A group of --as; repeat for several."),
    status: str = typer.Option("open", help="open, approved, rejected, expired, cancelled or all."),
    as_json: bool = typer.Option(False, "--json"),
    wide: bool = WIDE,
) -> None:
    """List the human tasks you may act on.

    `orchestra decide` takes the 8-character ids it shows.
    """
    from orchestra.decisions import list_tasks

    actor, groups, is_admin = _decider(as_user, group)
    tasks = list_tasks(actor, groups, is_admin=is_admin, status=None if status == "all" else status)
    if as_json:
        emit_json(tasks)
        return
    if not tasks:
        console.print("[dim]no tasks[/dim]")
        return
    print_table(tasks_table(tasks, wide=wide), wide=wide)


def decide(
    task_id: str = typer.Argument(..., help="The task id from `orchestra inbox`, or its first 8+ characters."),
    decision: str = typer.Argument(..., help="approve or reject."),
    input: str | None = typer.Option(None, "--input", "-i", help="Form input: JSON text, or @file.json."),
    comment: str | None = typer.Option(None, "--comment", "-m", help="Why; recorded in the audit trail."),
    as_user: str | None = typer.Option(None, "--as", help="Decide as this user (default: the operator)."),
    group: list[str] | None = typer.Option(None, "--group", "-g", help="A group of --as; repeat for several."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Approve or reject a human task; its run resumes."""
    from orchestra.decisions import decide as decide_task

    actor, groups, is_admin = _decider(as_user, group)
    data = parse_input(input) if input is not None else None
    try:
        view = decide_task(task_id_of(task_id), decision, actor, groups, is_admin=is_admin, input=data,
                           comment=comment)
    except OrchestraError as exc:
        report(exc)
    if as_json:
        emit_json(view)
        return
    console.print(f"task {view['id']} {view['status']} by {escape(str(view['decided_by'] or actor))}; "
                  f"run {view['run_id']} resumes")
