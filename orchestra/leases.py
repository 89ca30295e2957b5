"""Leases on running steps, renewed by a heartbeat thread in each worker process.

A step that is running holds a lease (token + expiry) on its row. The worker
renews it every ``heartbeat_seconds``; the sweeper re-dispatches a step whose
lease has lapsed, which means its worker died. A redelivered message for a step
whose lease is still live does nothing, so a long step never runs twice at once,
however short the broker's visibility timeout.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta

from sqlalchemy import update

from orchestra import db
from orchestra.models import StepRun, utcnow
from orchestra.settings import get_settings

log = logging.getLogger(__name__)

_held: dict[str, str] = {}  # step row id -> lease token
_lock = threading.Lock()
_thread_pid: int | None = None


def expiry(extra_seconds: float = 0.0) -> datetime:
    return utcnow() + timedelta(seconds=get_settings().lease_seconds + extra_seconds)


def hold(row_id: str, token: str) -> None:
    """Keep renewing this row's lease until ``release``."""
    _ensure_heartbeat()
    with _lock:
        _held[row_id] = token


def release(row_id: str) -> None:
    with _lock:
        _held.pop(row_id, None)


def renew_held() -> int:
    """Extend every lease this process holds; returns how many were still ours."""
    with _lock:
        held = dict(_held)
    renewed = 0
    if not held:
        return 0
    with db.write_session() as session:
        for row_id, token in held.items():
            result = session.execute(
                update(StepRun).where(StepRun.id == row_id, StepRun.lease_token == token).values(lease_expires_at=expiry())
            )
            renewed += result.rowcount  # type: ignore[attr-defined]
    return renewed


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
