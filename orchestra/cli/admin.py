"""Operator commands: up, api, worker, beat, db upgrade, recover, keys, schedules list, demo-systems."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.markup import escape

from orchestra.cli.common import console, emit_json, err, fail, print_table, report
from orchestra.cli.runs import WIDE
from orchestra.cli.tables import keys_table, schedules_table
from orchestra.errors import OrchestraError

db_app = typer.Typer(help="The results database.", no_args_is_help=True, rich_markup_mode=None)
keys_app = typer.Typer(help="API keys: create (the token is shown once), list, revoke.", no_args_is_help=True,
                       rich_markup_mode=None)
schedules_app = typer.Typer(help="Cron schedules that submit runs.",
                            no_args_is_help=True, rich_markup_mode=None)


def db_upgrade() -> None:
    """Apply every migration to the results database."""
    from orchestra import migrations

    migrations.upgrade()
    console.print("[green]database is up to date[/green]")


def worker(
    concurrency: int = typer.Option(2, "--concurrency", "-c", help="Worker processes."),
    loglevel: str = typer.Option("info", "--loglevel", "-l"),
) -> None:
    """Start a Celery worker for Orchestra's steps.

    It is started again if it dies on its own.
    """
    import logging

    from orchestra.bootstrap import bootstrap
    from orchestra.supervise import supervise

    bootstrap()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/orchestra-worker] %(message)s")
    raise typer.Exit(supervise([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-c", str(concurrency),
                                "-l", loglevel, "-E", "--without-gossip", "--without-mingle"]))


def beat(loglevel: str = typer.Option("info", "--loglevel", "-l")) -> None:
    """Start Celery beat (schedules)."""
    from orchestra.settings import get_settings

    schedule = get_settings().var_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    _exec_celery(["beat", "-l", loglevel, "-s", str(schedule)])


def _exec_celery(args: list[str]) -> NoReturn:
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "workers.app", *args])


def up(procfile: Path = typer.Option(Path("Procfile"), help="Processes to start.")) -> None:
    """Start the whole stack (what `make run` runs).

    An embedded Redis if ORCHESTRA_REDIS_URL is unset, migrations, then the Procfile through honcho.
    Refuses to start a second stack on the same var/.
    """
    from orchestra.stack import run_stack

    raise typer.Exit(run_stack(procfile))


def api(host: str = typer.Option(None, help="Defaults to ORCHESTRA_API_HOST (127.0.0.1)."),
        port: int = typer.Option(None, help="Defaults to ORCHESTRA_API_PORT (8000)."),
        workers: int = typer.Option(1, help="uvicorn worker processes.")) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from orchestra.settings import get_settings

    settings = get_settings()
    uvicorn.run("orchestra.api:create_app", factory=True, host=host or settings.api_host,
                port=port or settings.api_port, workers=workers, proxy_headers=True)


def keys_create(
    name: str = typer.Option(..., "--name", help="Who the key acts as; the actor on audit events."),
    role: str = typer.Option(..., "--role", help="admin, submitter, approver, viewer or auditor."),
    group: list[str] = typer.Option([], "--group", help="An approver's group; repeat for several."),
    expires: str = typer.Option(None, "--expires", help="Lifetime such as 30d or 12h; never expires when left out."),
) -> None:
    """Create a key and print its token once.

    Only a hash of it is stored.
    """
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


def keys_list(as_json: bool = typer.Option(False, "--json"),
              revoked: bool = typer.Option(False, "--revoked", help="Include revoked keys."),
              wide: bool = WIDE) -> None:
    """The keys, never their tokens."""
    from orchestra.auth import list_keys

    found = list_keys(include_revoked=revoked)
    if as_json:
        emit_json(found)
        return
    if not found:
        console.print("[dim]no keys; create one with `orchestra keys create --name NAME --role ROLE`[/dim]")
        return
    print_table(keys_table(found, wide=wide), wide=wide)


def keys_revoke(name: str = typer.Argument(..., help="The key's name or id.")) -> None:
    """Revoke a key; its token stops working at once."""
    from orchestra.auth import revoke_key

    try:
        revoked = revoke_key(name)
    except OrchestraError as exc:
        report(exc)
    console.print(f"revoked key {escape(revoked['name'])} ({revoked['id']})")


def schedules_list(as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """List schedules, when they are next due, their last run."""
    from orchestra.schedules import list_schedules

    found = list_schedules()
    if as_json:
        emit_json(found)
        return
    if not found:
        console.print("[dim]no schedules[/dim]")
        return
    print_table(schedules_table(found, wide=wide), wide=wide)


def recover() -> None:
    """Rebuild the waits and deadlines in Redis from the database."""
    from orchestra.waits import recover as recover_waits

    try:
        count = recover_waits()
    except OrchestraError as exc:
        report(exc)
    console.print(f"rebuilt {count} wait{'s' if count != 1 else ''} in Redis")


def demo_systems(
    port: int = typer.Option(8100, help="Port for the DEMO payments and CRM APIs (config/connectors.yaml expects 8100)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    database: Path | None = typer.Option(None, help="The business database to seed; default var/business.db."),
    flaky: int = typer.Option(0, help="Answer 503 this many times per new refund key, to show connector retries."),
) -> None:
    """Serve the DEMO payments and CRM APIs and order book.

    Not real systems; see orchestra/demo.py.
    """
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
