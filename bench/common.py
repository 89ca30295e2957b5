"""Shared set-up for the benchmarks: an embedded Redis, a fresh SQLite database, worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def worker(app: str, concurrency: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A prefork worker for ``app``; returns once it is ready."""
    args = [sys.executable, "-m", "celery", "-A", app, "worker", "-c", str(concurrency), "-l", "warning",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        _wait_ready(app)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_ready(app_path: str) -> None:
    module, _, attr = app_path.partition(":")
    mod = __import__(module, fromlist=["app"])
    app = getattr(mod, attr or "app")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return
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
