"""Real worker processes, started and killed the way operators and failures do it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """One ``celery worker`` process group with its own log file."""

    _count = 0

    def __init__(self, env: dict[str, str], log_dir: Path, concurrency: int = 2, extra_env: dict[str, str] | None = None,
                 supervised: bool = False, app: str = "workers.app"):
        Worker._count += 1
        self.name = f"w{Worker._count}-{os.getpid()}@test"
        self.log = log_dir / f"{self.name.split('@')[0]}.log"
        full_env = {**env, **(extra_env or {})}
        args = [sys.executable, "-m", "celery", "-A", app, "worker", "-c", str(concurrency), "-l", "info",
                "-n", self.name, "--without-gossip", "--without-mingle", "-E"]
        if supervised:  # as operators run it: `orchestra worker`, which restarts a worker that dies on its own
            args = [sys.executable, "-m", "orchestra.cli", "worker", "-c", str(concurrency)]
        self.process = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=open(self.log, "ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            if "ready." in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        """Kill the whole process group at once, as a machine failure would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown: finish the current tasks, then exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_run(run_id: str, statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled", "waiting"),
                 timeout: float = 60.0) -> dict[str, Any]:
    """Poll the database until the run reaches one of ``statuses``; returns its view."""
    from orchestra.runs import run_view

    return wait_until(lambda: (v := run_view(run_id))["status"] in statuses and v, timeout=timeout,
                      what=f"run {run_id} to reach {statuses}")
