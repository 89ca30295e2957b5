"""Keep a Celery worker running: restart it when it dies on its own.

A Celery worker on Redis can exit with "Unrecoverable error" when the broker
drops mid-acknowledgement (seen with Celery 5.6 and 5.7 on a Redis restart),
and honcho, which runs ``orchestra up``, stops the whole stack when any process
exits. ``orchestra worker`` therefore runs the Celery worker as a child and starts
it again after an unexpected exit. Work is not lost meanwhile: a step whose worker
died is re-dispatched by the sweeper once its lease lapses.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from types import FrameType

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
STEADY_AFTER = 60.0  # a worker that ran this long restarts without backoff


def supervise(args: list[str]) -> int:
    """Run ``args`` until it exits cleanly or this process is asked to stop; returns the exit code."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, forward)
    backoff = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(args)
        code = child.wait()
        if stopping or code == 0:
            return code
        backoff = 1.0 if time.monotonic() - started > STEADY_AFTER else min(backoff * 2, MAX_BACKOFF)
        log.warning("the Celery worker exited with %s; starting it again in %.0fs", code, backoff)
        time.sleep(backoff)
