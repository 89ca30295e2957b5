"""Shared set-up for the benchmarks: an embedded Redis, a fresh SQLite database, worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def environment() -> Iterator[Path]:
    """Point this process (and its children) at a private Redis and database."""
    from orchestra import db
    from orchestra.bootstrap import bootstrap
    from orchestra.embedded import EmbeddedRedis
    from orchestra.settings import get_settings

    tmp = Path(tempfile.mkdtemp(prefix="orchestra-bench-"))
    redis = EmbeddedRedis(tmp / "redis", persist=False).start()
    os.environ.update({
        "ORCHESTRA_REDIS_URL": redis.url,
        "ORCHESTRA_DATABASE_URL": os.environ.get("ORCHESTRA_BENCH_DATABASE_URL", f"sqlite:///{tmp / 'bench.db'}"),
        "ORCHESTRA_VAR_DIR": str(tmp / "var"),
        "ORCHESTRA_CONFIG_DIR": str(ROOT / "config"),
    })
    get_settings.cache_clear()
    db.reset_engine()
    bootstrap()
    try:
        yield tmp
    finally:
        redis.stop()


IDLE_QUEUE = "bench-idle"  # workers start on this empty queue, so the clock starts when they turn to the real one


@contextmanager
def worker(app: str, concurrency: int, log: Path) -> Iterator[Callable[[], float]]:
    """A prefork worker for ``app``, ready but idle; the callable it yields starts it on the queued runs.

    The worker starts listening on an empty queue, and the callable adds Celery's
    default queue through a remote-control broadcast and returns the time it did.
    Starting it that way keeps process start-up and imports out of the figure, on
    both sides the same.
    """
    args = [sys.executable, "-m", "celery", "-A", app, "worker", "-c", str(concurrency), "-l", "warning",
            "-Q", IDLE_QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
    try:
        celery = _wait_ready(app)

        def start() -> float:
            if not celery.control.add_consumer("celery", reply=True, limit=1, timeout=10):  # limit: don't wait out the timeout
                raise RuntimeError(f"worker for {app} did not take the queue; see {log}")
            return time.perf_counter()

        yield start
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_ready(app_path: str) -> Any:
    module, _, attr = app_path.partition(":")
    mod = __import__(module, fromlist=["app"])
    app = getattr(mod, attr or "app")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return app
    raise RuntimeError(f"worker for {app_path} did not answer within 30s")


_last_progress = [0.0]


def progress(label: str, done: int, total: int, started: float) -> None:
    """Overwrite one progress line on stderr, at most twice a second."""
    now = time.perf_counter()
    if done < total and now - _last_progress[0] < 0.5:
        return
    _last_progress[0] = now
    rate = done / max(now - started, 1e-9)
    sys.stderr.write(f"\r{label}: {done}/{total} ({rate:,.0f}/s)   ")
    sys.stderr.flush()
