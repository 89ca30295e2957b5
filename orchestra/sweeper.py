"""The sweeper: finds work that lost its worker or its message and dispatches it again.

It runs as a thread in every worker's main process (and can run anywhere else);
several sweepers at once are safe because each re-dispatch is claimed with a
compare-and-set on the row it is about.

- A running step whose lease lapsed (its worker died) is re-dispatched within
  ``lease_seconds`` + ``sweep_seconds``, not after the broker's visibility timeout.
- A pending or running run that made no progress for ``stall_seconds`` and holds
  no live lease is re-dispatched; this covers runs recorded while Redis was down.
- The wait store's sweeps run on every tick: due deadlines, and waits Redis lost.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import exists, select, update

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from orchestra import broker, db, escalation, keys, waits
from orchestra.models import Run, RunStatus, StepRun, StepStatus, utcnow
from orchestra.settings import get_settings

log = logging.getLogger(__name__)

CELERY_QUEUE = "celery"  # Celery's default queue, a Redis list


def reap_lapsed_leases() -> int:
    """Re-dispatch the runs of steps whose lease lapsed; returns how many runs."""
    now = utcnow()
    with db.read_session() as session:
        lapsed = session.execute(
            select(StepRun.id, StepRun.run_id, StepRun.lease_expires_at).where(
                StepRun.status.in_([StepStatus.running.value, StepStatus.pending.value]),
                StepRun.lease_expires_at.is_not(None), StepRun.lease_expires_at < now,
            ).limit(500)
        ).all()
    runs: set[str] = set()
    for row_id, run_id, old in lapsed:
        with db.write_session() as session:
            won = session.execute(
                # Dropping the lapsed lease makes the step claimable by the next message and revokes the
                # old holder's token, so a worker that was only slow cannot record over the new attempt.
                update(StepRun).where(StepRun.id == row_id, StepRun.lease_expires_at == old)
                .values(lease_expires_at=None, lease_token=None)
            ).rowcount  # type: ignore[attr-defined]
        if won:
            runs.add(run_id)
    for run_id in runs:
        log.warning("run %s: a step's lease lapsed (its worker died?); re-dispatching", run_id)
        broker.enqueue(run_id)
    return len(runs)


def redispatch_stalled() -> int:
    """Re-dispatch pending or running runs that made no progress for ``stall_seconds``.

    While the broker queue holds a backlog a quiet run is most likely waiting its
    turn, so the wait is ten times longer: re-dispatching it would only add load.
    """
    now = utcnow()
    stall = get_settings().stall_seconds * (10 if _backlog() else 1)
    cutoff = now - timedelta(seconds=stall)
    live_lease = exists().where(StepRun.run_id == Run.id, StepRun.lease_expires_at > now)
    with db.read_session() as session:
        stalled = session.execute(
            select(Run.id, Run.updated_at).where(
                Run.status.in_([RunStatus.pending.value, RunStatus.running.value]), Run.updated_at < cutoff, ~live_lease
            ).limit(200)
        ).all()
    count = 0
    for run_id, old in stalled:
        with db.write_session() as session:
            won = session.execute(update(Run).where(Run.id == run_id, Run.updated_at == old).values(updated_at=now)).rowcount  # type: ignore[attr-defined]
        if won:
            log.warning("run %s made no progress for %ss; re-dispatching", run_id, stall)
            broker.enqueue(run_id)
            count += 1
    return count


def _backlog() -> bool:
    try:
        return bool(keys.client().llen(CELERY_QUEUE))
    except RedisError:
        return True  # Redis is away: nothing can be dispatched anyway


def sweep_once() -> None:
    """One pass of every sweep; a failing part is logged and does not stop the others."""
    for part in (reap_lapsed_leases, redispatch_stalled, waits.reconcile_waits, escalation.sweep_deadlines):
        name = getattr(part, "__name__", part)
        try:
            part()
        except (RedisError, KombuOperationalError, OperationalError) as exc:  # an outage: say so once, no traceback
            log.warning("sweep %s skipped: %s is unavailable (%s)", name,
                        "the database" if isinstance(exc, OperationalError) else "Redis", exc)
        except Exception:
            log.exception("sweep %s failed", name)


def start_sweeper() -> threading.Thread:
    """Sweep every ``sweep_seconds`` in a daemon thread."""
    interval = get_settings().sweep_seconds
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            sweep_once()

    thread = threading.Thread(target=loop, name="orchestra-sweeper", daemon=True)
    thread.start()
    return thread
