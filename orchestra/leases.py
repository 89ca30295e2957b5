"""Leases on running steps, renewed by a heartbeat thread in each worker process.

A step that is running holds a lease (token + expiry) on its row. The worker
renews it every ``heartbeat_seconds``; the sweeper re-dispatches a step whose
lease has lapsed, which means its worker died. A redelivered message for a step
whose lease is still live does nothing, so a long step never runs twice at once,
however short the broker's visibility timeout.

A lease is not renewed past its step's deadline (its ``timeout`` and the grace
before Celery's hard limit), so a hung step is re-claimed and, after
``ORCHESTRA_MAX_RECOVERIES`` lapses, abandoned. A heartbeat that finds its lease
gone (the run was cancelled, or the lease lapsed and went to another worker)
interrupts the step it belongs to, as Celery's soft time limit does, so the
step's code stops and its result is never recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from orchestra import db
from orchestra.models import StepRun, utcnow
from orchestra.settings import get_settings

log = logging.getLogger(__name__)



@dataclass
class _Lease:
    token: str
    deadline: float | None  # time.monotonic() past which the lease is no longer renewed
    lost: bool = False  # the row no longer carries this token: cancelled, or taken over after a lapse


_held: dict[str, _Lease] = {}  # step row id -> the lease this process holds on it
_lock = threading.Lock()
_thread_pid: int | None = None


def expiry(extra_seconds: float = 0.0) -> datetime:
    return utcnow() + timedelta(seconds=get_settings().lease_seconds + extra_seconds)


def hold(row_id: str, token: str, timeout: float | None = None) -> None:
    """Keep renewing this row's lease until ``release``, for at most ``timeout`` seconds."""
    _ensure_heartbeat()
    with _lock:
        _held[row_id] = _Lease(token, None if timeout is None else time.monotonic() + timeout)


def release(row_id: str) -> bool:
    """Stop renewing; True if the lease was lost while it was held."""
    with _lock:
        lease = _held.pop(row_id, None)
    return lease is not None and lease.lost


def lost(row_id: str) -> bool:
    """True if the lease on ``row_id`` was taken away while this process held it."""
    with _lock:
        lease = _held.get(row_id)
    return lease is not None and lease.lost


def renew_held() -> int:
    """Extend every lease this process holds and is within its deadline; returns how many were still ours."""
    now = time.monotonic()
    with _lock:
        held = {row_id: lease for row_id, lease in _held.items()
                if not lease.lost and (lease.deadline is None or lease.deadline > now)}
    if not held:
        return 0
    gone: list[str] = []
    with db.write_session() as session:
        for row_id, lease in held.items():
            result = session.execute(update(StepRun).where(StepRun.id == row_id, StepRun.lease_token == lease.token)
                                     .values(lease_expires_at=expiry()))
            if not result.rowcount:  # type: ignore[attr-defined]
                gone.append(row_id)
    if gone:
        _lose(gone)
    return len(held) - len(gone)


def _lose(row_ids: list[str]) -> None:
    """Mark leases lost and stop their steps; a row released meanwhile (its step ended) is left alone."""
    with _lock:
        still_held = [row_id for row_id in row_ids if row_id in _held]
        for row_id in still_held:
            _held[row_id].lost = True
        if not still_held:
            return
        log.warning("lost the lease on step rows %s (the run was cancelled, or another worker took it over); "
                    "stopping the step", ", ".join(still_held))
        interrupt()  # under the lock: the step cannot be released, and the next one started, in between


def interrupt() -> None:
    """Stop the step running in this process's main thread, the way Celery's soft time limit does.

    Only where a handler for that signal is installed (a prefork pool's child): elsewhere
    the signal would end the process, so the step's result is just refused when it ends.
    """
    handler = signal.getsignal(signal.SIGUSR1)
    if callable(handler):
        os.kill(os.getpid(), signal.SIGUSR1)


def _beat() -> None:
    interval = get_settings().heartbeat_seconds
    while True:
        threading.Event().wait(interval)
        try:
            renew_held()
        except Exception:  # the next beat tries again; a lapse only costs a re-dispatch
            log.exception("lease heartbeat failed")


def _ensure_heartbeat() -> None:
    global _thread_pid
    if _thread_pid == os.getpid():
        return
    with _lock:
        if _thread_pid != os.getpid():
            _held.clear()  # leases held by a parent before fork are not ours
            threading.Thread(target=_beat, name="orchestra-heartbeat", daemon=True).start()
            _thread_pid = os.getpid()
