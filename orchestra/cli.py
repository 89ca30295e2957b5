"""The ``orchestra`` command line (typer + rich). Listing commands take ``--json``."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Column, Table

from orchestra.errors import ErrorList, OrchestraError

app = typer.Typer(help="Orchestra: durable, governed workflows on Celery.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="The results database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()
err = Console(stderr=True)

STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "magenta", "waiting": "yellow",
                "running": "cyan", "pending": "white", "skipped": "dim"}
ENDED_OR_PARKED = {"succeeded", "failed", "cancelled", "waiting"}


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def report(exc: OrchestraError) -> NoReturn:
    if isinstance(exc, ErrorList):
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        for item in exc.errors:
            loc = ".".join(str(p) for p in item.get("loc", [])) or "(root)"
            err.print(f"  [bold]{escape(loc)}[/bold]: {escape(item['msg'])}")
        raise typer.Exit(1)
    fail(exc.message)


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
    from orchestra.models import json_problem

    problem = json_problem(data)
    if problem is not None:
        fail(f"{source} contains {problem}")
    return data


def _status(text: str) -> str:
    return f"[{STATUS_STYLE.get(text, 'white')}]{text}[/]"


def steps_table(view: dict[str, Any]) -> Table:
    table = Table(title=f"run {view['id']} · {view['workflow']} v{view['version']} · {_status(view['status'])}")
    for column in ("step", "status", "attempts", "started", "finished", "output / error"):
        table.add_column(column, overflow="fold")
    for s in view["steps"]:
        label = s["id"] + (f"[{s['item']}]" if s.get("item") is not None else "")
        detail = s["error"] or ("" if s["output"] is None else json.dumps(s["output"], default=str))
        table.add_row(label, _status(s["status"]), str(s["attempts"]), (s["started_at"] or "")[11:23],
                      (s["finished_at"] or "")[11:23], detail[:120])
    return table


@app.command()
def submit(
    workflow: str = typer.Argument(..., help="Workflow name, as registered or under config/workflows/."),
    input: str = typer.Option("{}", "--input", "-i", help="JSON text, or @file.json."),
    version: int | None = typer.Option(None, help="A specific version; default the latest."),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key", help="Repeat-safe submission key."),
    wait: bool = typer.Option(False, "--wait", help="Return when the run ends or parks; exit 1 if it failed."),
    timeout: float = typer.Option(600.0, help="Seconds --wait waits at most."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Submit a run and print its id."""
    from orchestra.bootstrap import bootstrap
    from orchestra.runs import run_view, submit_run

    data = parse_input(input)
    try:
        bootstrap()
        run, _ = submit_run(workflow, data, version=version, idempotency_key=idempotency_key, actor=_cli_actor())
    except OrchestraError as exc:
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


def follow(run_id: str, timeout: float, *, quiet: bool = False) -> dict[str, Any]:
    """Poll the run, showing its step table live, until it ends or parks."""
    from orchestra.runs import run_view

    deadline = time.monotonic() + timeout
    view = run_view(run_id)
    with Live(steps_table(view), console=err, refresh_per_second=8, transient=False) if not quiet else _nullcontext() as live:
        while view["status"] not in ENDED_OR_PARKED and time.monotonic() < deadline:
            time.sleep(0.2)
            view = run_view(run_id)
            if live is not None:
                live.update(steps_table(view))
    if view["status"] not in ENDED_OR_PARKED:
        fail(f"run {run_id} is still {view['status']} after {timeout:.0f}s; follow it with `orchestra show {run_id}`")
    return view


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _cli_actor() -> str:
    return os.environ.get("ORCHESTRA_ACTOR") or f"cli:{os.environ.get('USER', 'operator')}"


@app.command()
def runs(
    workflow: str | None = typer.Option(None, help="Only this workflow."),
    status: str | None = typer.Option(None, help="Only this status."),
    limit: int = typer.Option(20, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List runs, newest first."""
    from orchestra.runs import list_runs

    found, _ = list_runs(workflow=workflow, status=status, limit=limit)
    rows: list[dict[str, Any]] = [{"id": r.id, "workflow": r.workflow, "version": r.version, "status": r.status,
             "created_at": r.created_at.isoformat(), "error": r.error} for r in found]
    if as_json:
        emit_json(rows)
        return
    table = Table(Column("id", min_width=36, no_wrap=True), "workflow", "status", "created", "error")
    for r in rows:
        table.add_row(r["id"], f"{r['workflow']} v{r['version']}", _status(r["status"]), r["created_at"][:19],
                      (r["error"] or "")[:80])
    console.print(table)


@app.command()
def show(run_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a run and its steps."""
    from orchestra.runs import run_view

    try:
        view = run_view(run_id)
    except OrchestraError as exc:
        report(exc)
    if as_json:
        emit_json(view)
        return
    console.print(steps_table(view))
    if view["error"]:
        console.print(f"[red]error:[/red] {view['error']}")
    if view["output"] is not None:
        console.print_json(json.dumps(view["output"], default=str))


@app.command()
def audit(
    run_id: str,
    verify: bool = typer.Option(False, "--verify", help="Recompute the hash chain; exit 1 if it is broken."),
    format: str = typer.Option("table", "--format", help="table, json or jsonl."),
) -> None:
    """Print a run's audit trail."""
    from orchestra import audit as trail
    from orchestra import db
    from orchestra.runs import get_run

    try:
        run = get_run(run_id)
    except OrchestraError as exc:
        report(exc)
    with db.read_session() as session:
        events = trail.list_events(session, run_id)
    result = trail.verify_chain(events, run.audit_hash)
    if format == "jsonl":
        for event in events:
            sys.stdout.write(json.dumps(trail.event_dict(event), default=str) + "\n")
    elif format == "json":
        emit_json({"events": [trail.event_dict(e) for e in events], "verified": result.verified})
    elif format == "table":
        table = Table("seq", "at", "type", "step", "actor", "payload")
        for e in events:
            table.add_row(str(e.seq), e.at.isoformat()[11:23], e.type, e.step_id or "", e.actor,
                          json.dumps(e.payload, default=str)[:100])
        console.print(table)
    else:
        fail(f"unknown --format '{format}'; use table, json or jsonl")
    if verify:
        if result.verified:
            err.print(f"[green]verified:[/green] the chain of {result.events} events holds")
        else:
            err.print(f"[red]NOT verified:[/red] {result.reason} (first bad event: {result.first_bad_seq})")
            raise typer.Exit(1)


@app.command()
def validate(spec: Path = typer.Argument(..., help="A workflow spec file (YAML or JSON).")) -> None:
    """Check a spec; print every error with its field, and exit 1 if there are any."""
    from orchestra.spec import load_spec

    if not spec.exists():
        fail(f"{spec} does not exist; pass the path of a YAML or JSON spec")
    try:
        loaded = load_spec(spec.read_text())
    except OrchestraError as exc:
        report(exc)
    console.print(f"[green]valid:[/green] {loaded.name} with {len(loaded.steps)} steps")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to the results database."""
    from orchestra import migrations

    migrations.upgrade()
    console.print("[green]database is up to date[/green]")


@app.command()
def worker(
    concurrency: int = typer.Option(2, "--concurrency", "-c", help="Worker processes."),
    loglevel: str = typer.Option("info", "--loglevel", "-l"),
) -> None:
    """Start a Celery worker for Orchestra's steps; it is started again if it dies on its own."""
    import logging

    from orchestra.bootstrap import bootstrap
    from orchestra.supervise import supervise

    bootstrap()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/orchestra-worker] %(message)s")
    raise typer.Exit(supervise([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-c", str(concurrency),
                                "-l", loglevel, "-E", "--without-gossip", "--without-mingle"]))


@app.command()
def beat(loglevel: str = typer.Option("info", "--loglevel", "-l")) -> None:
    """Start Celery beat (schedules)."""
    from orchestra.settings import get_settings

    schedule = get_settings().var_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    _exec_celery(["beat", "-l", loglevel, "-s", str(schedule)])


def _exec_celery(args: list[str]) -> NoReturn:
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "workers.app", *args])


@app.command()
def up(procfile: Path = typer.Option(Path("Procfile"), help="Processes to start.")) -> None:
    """Start the whole stack: embedded Redis if needed, migrations, then the Procfile through honcho."""
    from orchestra.stack import run_stack

    raise typer.Exit(run_stack(procfile))


keys_app = typer.Typer(help="API keys: create (the token is shown once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command()
def api(host: str = typer.Option(None, help="Defaults to ORCHESTRA_API_HOST (127.0.0.1)."),
        port: int = typer.Option(None, help="Defaults to ORCHESTRA_API_PORT (8000)."),
        workers: int = typer.Option(1, help="uvicorn worker processes.")) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from orchestra.settings import get_settings

    settings = get_settings()
    uvicorn.run("orchestra.api:create_app", factory=True, host=host or settings.api_host,
                port=port or settings.api_port, workers=workers, proxy_headers=True)


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="Who the key acts as; the actor on audit events."),
    role: str = typer.Option(..., "--role", help="admin, submitter, approver, viewer or auditor."),
    group: list[str] = typer.Option([], "--group", help="An approver's group; repeat for several."),
    expires: str = typer.Option(None, "--expires", help="Lifetime such as 30d or 12h; never expires when left out."),
) -> None:
    """Create a key and print its token once; only a hash of it is stored."""
    from datetime import timedelta

    from orchestra.auth import create_key
    from orchestra.spec import parse_duration

    try:
        lifetime = timedelta(seconds=parse_duration(expires)) if expires else None
    except ValueError as exc:
        fail(f"--expires: {exc}")
    try:
        token = create_key(name, role, group, expires_in=lifetime)
    except OrchestraError as exc:
        report(exc)
    err.print(f"created key [bold]{escape(name)}[/bold] ({role}); the token is shown only now:")
    sys.stdout.write(token + "\n")


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json"),
              revoked: bool = typer.Option(False, "--revoked", help="Include revoked keys.")) -> None:
    """The keys, never their tokens."""
    from orchestra.auth import list_keys

    found = list_keys(include_revoked=revoked)
    if as_json:
        emit_json(found)
        return
    table = Table(title="API keys")
    for column in ("name", "role", "groups", "created", "expires", "last used", "revoked"):
        table.add_column(column)
    for k in found:
        table.add_row(k["name"], k["role"], ", ".join(k["groups"]), (k["created_at"] or "")[:19],
                      (k["expires_at"] or "")[:19], (k["last_used_at"] or "")[:19], (k["revoked_at"] or "")[:19])
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(..., help="The key's name or id.")) -> None:
    """Revoke a key; its token stops working at once."""
    from orchestra.auth import revoke_key

    try:
        revoked = revoke_key(name)
    except OrchestraError as exc:
        report(exc)
    console.print(f"revoked key {escape(revoked['name'])} ({revoked['id']})")


def _decider(as_user: str | None, groups: list[str] | None) -> tuple[str, list[str], bool]:
    """Without ``--as`` the CLI acts as the local operator, who sees and may decide every task."""
    if as_user:
        return as_user, list(groups or []), False
    return _cli_actor(), list(groups or []), True


@app.command()
def inbox(
    as_user: str | None = typer.Option(None, "--as", help="Act as this user (default: the operator, who sees all)."),
    group: list[str] | None = typer.Option(None, "--group", "-g", help="A group of --as; repeat for several."),
    status: str = typer.Option("open", help="open, approved, rejected, expired, cancelled or all."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the human tasks you may act on."""
    from orchestra.decisions import list_tasks

    actor, groups, is_admin = _decider(as_user, group)
    tasks = list_tasks(actor, groups, is_admin=is_admin, status=None if status == "all" else status)
    if as_json:
        emit_json(tasks)
        return
    # Ids are what a person copies into `decide`, so they are never shortened.
    table = Table(Column("task", min_width=36, no_wrap=True), "title", Column("run", overflow="fold"), "step",
                  "assignees", "level", "deadline", "status")
    for t in tasks:
        table.add_row(t["id"], escape(t["title"]), t["run_id"], t["step_id"], escape(", ".join(t["assignees"])),
                      str(t["level"]), (t["deadline"] or "")[:19], t["status"])
    console.print(table if tasks else "[dim]no tasks[/dim]")


@app.command()
def decide(
    task_id: str = typer.Argument(..., help="The task id, from `orchestra inbox`."),
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
        view = decide_task(task_id, decision, actor, groups, is_admin=is_admin, input=data, comment=comment)
    except OrchestraError as exc:
        report(exc)
    if as_json:
        emit_json(view)
        return
    console.print(f"task {view['id']} {view['status']} by {escape(str(view['decided_by'] or actor))}; "
                  f"run {view['run_id']} resumes")


@app.command()
def cancel(
    run_id: str = typer.Argument(..., help="The run to end."),
    reason: str = typer.Option("", "--reason", help="Recorded on the run and in its audit trail."),
) -> None:
    """Cancel a pending, running or waiting run; its open tasks close."""
    from orchestra.runs import cancel_run

    try:
        run = cancel_run(run_id, actor=_cli_actor(), reason=reason)
    except OrchestraError as exc:
        report(exc)
    console.print(f"{run.id} {_status(run.status)}")


@app.command()
def retry(
    run_id: str = typer.Argument(..., help="The failed run to resume."),
    wait: bool = typer.Option(False, "--wait", help="Return when the run ends or parks; exit 1 if it failed again."),
    timeout: float = typer.Option(600.0, help="Seconds --wait waits at most."),
) -> None:
    """Resume a failed run; the steps that succeeded are kept and not run again."""
    from orchestra.runs import retry_run

    try:
        run = retry_run(run_id, actor=_cli_actor())
    except OrchestraError as exc:
        report(exc)
    if not wait:
        console.print(f"{run.id} {_status(run.status)}")
        return
    view = follow(run.id, timeout)
    console.print(f"{run.id} {view['status']}")
    raise typer.Exit(0 if view["status"] in ("succeeded", "waiting") else 1)


@app.command()
def recover() -> None:
    """Rebuild every wait and deadline in Redis from the database (after Redis lost its data)."""
    from orchestra.waits import recover as recover_waits

    try:
        count = recover_waits()
    except OrchestraError as exc:
        report(exc)
    console.print(f"rebuilt {count} wait{'s' if count != 1 else ''} in Redis")


@app.command("demo-systems")
def demo_systems(
    port: int = typer.Option(8100, help="Port for the DEMO payments and CRM APIs (config/connectors.yaml expects 8100)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    database: Path | None = typer.Option(None, help="The business database to seed; default var/business.db."),
    flaky: int = typer.Option(0, help="Answer 503 this many times per new refund key, to show connector retries."),
) -> None:
    """Seed the DEMO order book and serve DEMO payments and CRM APIs (not real systems; see orchestra/demo.py)."""
    import logging
    import signal

    from orchestra.demo import DemoSystems, seed
    from orchestra.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = database or get_settings().var_dir / "business.db"
    orders = seed(path)
    try:
        server = DemoSystems(path, host=host, port=port, flaky=flaky,
                             payments_token=os.environ.get("ORCHESTRA_PAYMENTS_TOKEN") or None,
                             crm_key=os.environ.get("ORCHESTRA_CRM_API_KEY") or None)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses it or pass --port")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    err.print(f"DEMO systems of record on {server.url}: payments /refunds, CRM /crm; "
              f"{orders} demo orders in {path}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    try:
        app()
    finally:
        # Celery result handles unsubscribe from Redis when collected; do it while the interpreter is whole.
        gc.collect()


if __name__ == "__main__":
    main()
