"""The ``orchestra`` command line (typer + rich). Listing commands take ``--json`` and ``--wide``.

Each module holds the commands of one subject; this one assembles them. Modules import only typer and
rich at the top, and what a command needs when it runs, so ``orchestra --help`` answers at once.
"""

from __future__ import annotations

import gc

import typer
from rich.markup import escape

from orchestra.cli import admin, common, runs, tasks, workflows

app = typer.Typer(help="Orchestra: durable, governed workflows on Celery. A run or task id may be given as 8 "
                       "or more of its first or last characters.", no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None)  # plain help: rendering it with rich costs a fifth of a second

for command in (runs.submit, runs.runs, runs.show, runs.audit, tasks.inbox, tasks.decide, runs.cancel, runs.retry,
                workflows.validate, admin.up, admin.api, admin.worker, admin.beat, admin.recover):
    app.command()(command)
app.command("demo-systems")(admin.demo_systems)

admin.db_app.command("upgrade")(admin.db_upgrade)
admin.keys_app.command("create")(admin.keys_create)
admin.keys_app.command("list")(admin.keys_list)
admin.keys_app.command("revoke")(admin.keys_revoke)
admin.schedules_app.command("list")(admin.schedules_list)
workflows.workflows_app.command("list")(workflows.workflows_list)
workflows.workflows_app.command("show")(workflows.workflows_show)
workflows.workflows_app.command("register")(workflows.workflows_register)
app.add_typer(admin.db_app, name="db")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(workflows.workflows_app, name="workflows")
app.add_typer(admin.schedules_app, name="schedules")


def main() -> None:
    try:
        app()
    except Exception as exc:
        if not type(exc).__module__.startswith("sqlalchemy"):
            raise
        # The store's errors are translated here, at the edge, rather than shown as a traceback.
        from orchestra.settings import get_settings

        where = get_settings().resolved_database_url().split("@")[-1]
        common.err.print(f"[red]error:[/red] the results database ({where}) cannot be read: "
                         f"{escape(str(exc).splitlines()[0])}; create or upgrade it with `orchestra db upgrade`, "
                         "or check ORCHESTRA_DATABASE_URL")
        raise SystemExit(1) from None
    finally:
        # Celery result handles unsubscribe from Redis when collected; do it while the interpreter is whole.
        gc.collect()


__all__ = ["app", "main"]
