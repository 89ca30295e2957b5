"""Commands about runs: submit, runs, show, audit, cancel, retry."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer
from rich.markup import escape

from orchestra.cli.common import (ENDED_OR_PARKED, EXIT_NOT_ENQUEUED, cli_actor, console, emit_json, err, fail,
                                  parse_input, print_table, report, run_id_of)
from orchestra.cli.tables import audit_table, runs_table, status, steps_table
from orchestra.errors import OrchestraError

WIDE = typer.Option(False, "--wide", help="Full ids, ISO timestamps and whole values; wider than 80 columns.")


def submit(
    workflow: str = typer.Argument(..., help="Workflow name, as registered or under config/workflows/."),
    input: str = typer.Option("{}", "--input", "-i", help="JSON text, or @file.json."),
    version: int | None = typer.Option(None, help="A specific version; default the latest."),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key", help="Repeat-safe submission key."),
    key: str | None = typer.Option(None, "--key", help="A business key to find the run by, e.g. the order id."),
    wait: bool = typer.Option(False, "--wait", help="Return when the run ends or parks; exit 1 if it failed."),
    timeout: float = typer.Option(600.0, help="Seconds --wait waits at most."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Submit a run and print its id.

    Exits 3 when Redis is down: the run is recorded as pending and starts when Redis is back.
    """
    from orchestra.bootstrap import bootstrap
    from orchestra.runs import run_view, submit_run

    data = parse_input(input)
    try:
        bootstrap()
        run, _ = submit_run(workflow, data, version=version, idempotency_key=idempotency_key, key=key,
                            actor=cli_actor())
    except OrchestraError as exc:
        _report_not_enqueued(exc, idempotency_key, as_json)
        report(exc)
    if not wait:
        emit_json(run_view(run.id)) if as_json else console.print(run.id)
        return
    view = follow(run.id, timeout, quiet=as_json)
    if as_json:
        emit_json(view)
    else:
        console.print(f"{run.id} {view['status']}")
    raise typer.Exit(0 if view["status"] in ("succeeded", "waiting") else 1)


def _report_not_enqueued(exc: OrchestraError, idempotency_key: str | None, as_json: bool) -> None:
    """A run that was recorded but not enqueued is not an error to retry blindly: it starts by itself."""
    run_id = getattr(exc, "run_id", None)
    if not (run_id and exc.retryable):
        return
    if as_json:
        emit_json({"id": run_id, "status": "pending", "enqueued": False})
    else:
        sys.stdout.write(f"{run_id}\n")
    again = (f"; submitting again with --idempotency-key {idempotency_key} returns this run" if idempotency_key
             else "; do not submit it again, or it runs twice")
    err.print(f"[yellow]recorded as pending as run {run_id}; it starts when Redis is back[/yellow]{escape(again)}")
    raise typer.Exit(EXIT_NOT_ENQUEUED)


def follow(run_id: str, timeout: float, *, quiet: bool = False) -> dict[str, Any]:
    """Poll the run, showing its step table live, until it ends or parks."""
    from contextlib import nullcontext

    from rich.live import Live

    from orchestra.runs import run_view

    deadline = time.monotonic() + timeout
    view = run_view(run_id)
    with Live(steps_table(view), console=err, refresh_per_second=8, transient=False) if not quiet else nullcontext() as live:
        while view["status"] not in ENDED_OR_PARKED and time.monotonic() < deadline:
            time.sleep(0.2)
            view = run_view(run_id)
            if live is not None:
                live.update(steps_table(view))
    if view["status"] not in ENDED_OR_PARKED:
        fail(f"run {run_id} is still {view['status']} after {timeout:.0f}s; follow it with `orchestra show {run_id}`")
    return view


def runs(
    workflow: str | None = typer.Option(None, help="Only this workflow."),
    status_: str | None = typer.Option(None, "--status", help="Only this status."),
    limit: int = typer.Option(20, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json"),
    wide: bool = WIDE,
) -> None:
    """List runs, newest first."""
    found = _recent_runs(workflow, status_, limit)
    rows: list[dict[str, Any]] = [{"id": r.id, "workflow": r.workflow, "version": r.version, "status": r.status,
                                   "created_at": r.created_at.isoformat(), "error": r.error} for r in found]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("[dim]no runs[/dim]")
        return
    print_table(runs_table(rows, wide=wide), wide=wide)


def _recent_runs(workflow: str | None, status_: str | None, limit: int) -> list[Any]:
    """``orchestra.runs.list_runs`` without importing the submission machinery (Celery, redis, jsonschema),
    so that ``orchestra runs`` answers at once."""
    from sqlalchemy import select

    from orchestra import db
    from orchestra.models import Run, RunStatus

    if status_ is not None and status_ not in RunStatus.__members__:
        fail(f"'{status_}' is not a run status; use one of {', '.join(RunStatus.__members__)}")
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if workflow:
        query = query.where(Run.workflow == workflow)
    if status_:
        query = query.where(Run.status == status_)
    with db.read_session() as session:
        return list(session.scalars(query))


def show(run_id: str = typer.Argument(..., help="A run id, or its first 8+ characters."),
         as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """Show a run and its steps."""
    from orchestra.runs import run_view

    try:
        view = run_view(run_id)
    except OrchestraError as exc:
        report(exc)
    if as_json:
        emit_json(view)
        return
    print_table(steps_table(view, wide=wide), wide=wide)
    if view["error"]:
        console.print(f"[red]error:[/red] {escape(view['error'])}")
    if view["output"] is not None:
        console.print_json(json.dumps(view["output"], default=str))


def audit(
    run_id: str = typer.Argument(..., help="A run id, or its first 8+ characters."),
    verify: bool = typer.Option(False, "--verify", help="Recompute the hash chain; exit 1 if it is broken."),
    format: str = typer.Option("table", "--format", help="table, json or jsonl."),
    wide: bool = WIDE,
) -> None:
    """Print a run's audit trail."""
    from orchestra import audit as trail
    from orchestra import db
    from orchestra.runs import get_run

    if format not in ("table", "json", "jsonl"):
        fail(f"unknown --format '{format}'; use table, json or jsonl")
    try:
        run = get_run(run_id)
    except OrchestraError as exc:
        report(exc)
    with db.read_session() as session:
        events = trail.list_events(session, run.id)
    result = trail.verify_chain(events, run.audit_hash)
    if format == "jsonl":
        for event in events:
            sys.stdout.write(json.dumps(trail.event_dict(event), default=str) + "\n")
    elif format == "json":
        emit_json({"events": [trail.event_dict(e) for e in events], "verified": result.verified})
    else:
        print_table(audit_table([trail.event_dict(e) for e in events], wide=wide), wide=wide)
    if verify:
        if result.verified:
            err.print(f"[green]verified:[/green] the chain of {result.events} events holds")
        else:
            err.print(f"[red]NOT verified:[/red] {result.reason} (first bad event: {result.first_bad_seq})")
            raise typer.Exit(1)


def cancel(
    run_id: str = typer.Argument(..., help="The run to end: its id, or its first 8+ characters."),
    reason: str = typer.Option("", "--reason", help="Recorded on the run and in its audit trail."),
) -> None:
    """Cancel a run that has not ended; its open tasks close."""
    from orchestra.runs import cancel_run

    try:
        run = cancel_run(run_id_of(run_id), actor=cli_actor(), reason=reason)
    except OrchestraError as exc:
        report(exc)
    console.print(f"{run.id} {status(run.status)}")


def retry(
    run_id: str = typer.Argument(..., help="The failed run to resume: its id, or its first 8+ characters."),
    wait: bool = typer.Option(False, "--wait", help="Return when the run ends or parks; exit 1 if it failed again."),
    timeout: float = typer.Option(600.0, help="Seconds --wait waits at most."),
) -> None:
    """Resume a failed run, keeping the steps that succeeded."""
    from orchestra.runs import retry_run

    try:
        run = retry_run(run_id_of(run_id), actor=cli_actor())
    except OrchestraError as exc:
        report(exc)
    if not wait:
        console.print(f"{run.id} {status(run.status)}")
        return
    view = follow(run.id, timeout)
    console.print(f"{run.id} {view['status']}")
    raise typer.Exit(0 if view["status"] in ("succeeded", "waiting") else 1)
