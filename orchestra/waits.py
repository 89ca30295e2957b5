"""The wait store: where parked runs sleep until a person or an event resumes them.

A parked step has one Redis hash, ``keys.WAIT + <wait id>``, and, when it has a
deadline, one member in the ``keys.DEADLINES`` sorted set scored by the
deadline's epoch seconds. The database mirrors every wait (``human_tasks`` and
``signal_waits``), so ``recover`` can rebuild Redis from it.

Two Lua scripts keep concurrent processes honest:

- ``CLAIM_DECISION`` lets exactly one decision settle a task (or collects
  quorum votes until one settles it);
- ``CLAIM_DUE`` hands each due deadline to exactly one sweeper, by pushing its
  score a lease into the future; a sweeper that dies mid-way leaves it to be
  claimed again once that lease lapses.

Resuming a run is one write transaction (``orchestra.transitions`` marks the
waiting step succeeded or failed and audits it) followed by ``broker.enqueue``,
whose worker recompiles what remains from the database. A run that ends closes
its waits in the same transaction; ``drop_waits`` then forgets them in Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from orchestra import broker, db, keys
from orchestra.errors import NotEnqueued
from orchestra.models import Decision, HumanTask, SignalWait, StepRun, StepStatus, TaskStatus, utcnow
from orchestra.outages import translated

log = logging.getLogger(__name__)

HUMAN = "h"
SIGNAL = "s"
CLAIM_TTL = 24 * 3600  # a settled claim outlives the wait so late losers hear who won
DUE_LEASE = 30.0  # seconds a sweeper holds a due deadline before another may take it
DUE_BATCH = 100

CLAIM_DECISION = """
local claim = redis.call('GET', KEYS[2])
if claim then return {'decided', claim} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
if ARGV[3] == 'approve' and tonumber(ARGV[4]) > 1 then
  if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return {'voted', ''} end
  redis.call('SADD', KEYS[3], ARGV[1])
  if redis.call('SCARD', KEYS[3]) < tonumber(ARGV[4]) then return {'vote', ''} end
end
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[5])
return {'won', ''}
"""

CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return due
"""


class ClaimOutcome(str, Enum):
    """What ``claim_decision`` found for one decision."""

    won = "won"  # this decision settles the task
    vote = "vote"  # an approval counted towards the quorum, which is not reached yet
    voted = "voted"  # this person already approved
    decided = "decided"  # another decision settled the task (``by`` and ``at`` say who and when)
    missing = "missing"  # Redis holds no wait for the task (lost, or the task closed)


@dataclass(frozen=True)
class Claim:
    """What ``claim_decision`` found, and for ``decided`` who decided and when."""

    outcome: ClaimOutcome
    by: str = ""
    at: str = ""


def _epoch(moment: datetime) -> float:
    return moment.astimezone(timezone.utc).timestamp()


def store_wait(wait_id: str, kind: str, run_id: str, step_id: str, *, level: int = 0,
               payload_hash: str = "", deadline: datetime | None = None) -> None:
    """Write one wait (hash and deadline) to Redis."""
    fields: dict[Any, Any] = {"k": kind, "r": run_id, "s": step_id, "l": level}
    if payload_hash:
        fields["h"] = payload_hash
    pipe = keys.client().pipeline(transaction=True)
    pipe.hset(keys.WAIT + wait_id, mapping=fields)
    if deadline is not None:
        pipe.zadd(keys.DEADLINES, {wait_id: _epoch(deadline)})
    else:
        pipe.zrem(keys.DEADLINES, wait_id)
    pipe.execute()


def drop_wait(wait_id: str) -> None:
    """Forget a wait in Redis; its claim stays so late deciders learn who won."""
    pipe = keys.client().pipeline(transaction=True)
    pipe.delete(keys.WAIT + wait_id, keys.CLAIM + wait_id + ":votes")
    pipe.zrem(keys.DEADLINES, wait_id)
    pipe.execute()


def claim_decision(task_id: str, actor: str, decision: str, quorum: int, at: datetime) -> Claim:
    """Atomically settle ``task_id`` for ``actor``, or count their approval towards ``quorum``."""
    r = keys.client()
    outcome, detail = r.eval(CLAIM_DECISION, 3, keys.WAIT + task_id, keys.CLAIM + task_id,
                             keys.CLAIM + task_id + ":votes", actor, at.isoformat(), decision, quorum, CLAIM_TTL)
    if outcome == ClaimOutcome.decided:
        by, _, when = str(detail).partition("|")
        return Claim(ClaimOutcome.decided, by, when)
    return Claim(ClaimOutcome(str(outcome)))


def release_claim(task_id: str, actor: str) -> None:
    """Undo a claim or vote whose database write failed, so the decision can be made again."""
    r = keys.client()
    r.srem(keys.CLAIM + task_id + ":votes", actor)
    claim = r.get(keys.CLAIM + task_id)
    if claim is not None and str(claim).split("|", 1)[0] == actor:
        r.delete(keys.CLAIM + task_id)


def claim_due(now: datetime | None = None, limit: int = DUE_BATCH) -> list[str]:
    """Wait ids whose deadline passed; each is handed to exactly one caller for ``DUE_LEASE`` seconds."""
    at = _epoch(now or utcnow())
    due = keys.client().eval(CLAIM_DUE, 1, keys.DEADLINES, at, limit, at + DUE_LEASE)
    return [str(d) for d in due]


def drop_waits(wait_ids: Iterable[str]) -> None:
    """Forget the waits a transition closed (its run ended), once that is committed."""
    for wait_id in wait_ids:
        try:
            drop_wait(wait_id)
        except Exception:  # noqa: BLE001 - recover() skips closed waits, and a stale one is refused
            log.exception("could not drop wait %s from Redis", wait_id)


def after_resume(run_id: str, wait_id: str, *, dispatch: bool, closed: Sequence[str] = ()) -> None:
    """Once the resume is committed: forget the Redis waits and hand what remains of the run to the workers.

    The resume is already recorded, so a broker outage here only delays the run:
    the sweeper re-dispatches a running run that makes no progress.
    """
    drop_waits([wait_id, *closed])
    if dispatch:
        try:
            broker.enqueue(run_id)
        except NotEnqueued as exc:
            log.warning("%s", exc.message)


def _open_waits() -> tuple[list[HumanTask], list[SignalWait], list[tuple[str, str]]]:
    """Every open wait whose step is parked, and the quorum votes cast on open tasks."""
    with db.read_session() as session:
        parked = StepRun.status == StepStatus.waiting.value  # joined by primary key: step_runs has no status index
        tasks = list(session.scalars(select(HumanTask).join(StepRun, StepRun.id == HumanTask.row_id)
                                     .where(HumanTask.status == TaskStatus.open.value, parked)))
        signals = list(session.scalars(select(SignalWait).join(StepRun, StepRun.id == SignalWait.row_id)
                                       .where(SignalWait.status == TaskStatus.open.value, parked)))
        votes = [(t, a) for t, a in session.execute(select(Decision.task_id, Decision.actor).where(
            Decision.task_id.in_([t.id for t in tasks]), Decision.final_for.is_(None))).all()] if tasks else []
    return tasks, signals, votes


def _store(waits: list[HumanTask | SignalWait], votes: list[tuple[str, str]]) -> None:
    for wait in waits:
        if isinstance(wait, HumanTask):
            store_wait(wait.id, HUMAN, wait.run_id, wait.step_id, level=wait.level, payload_hash=wait.payload_hash,
                       deadline=wait.deadline)
        else:
            store_wait(wait.id, SIGNAL, wait.run_id, wait.step_id, deadline=wait.deadline)
    ids = {w.id for w in waits}
    for task_id, actor in votes:
        if task_id in ids:
            keys.client().sadd(keys.CLAIM + task_id + ":votes", actor)


@translated
def recover() -> int:
    """Rebuild every open wait, deadline and quorum vote in Redis from the database; returns how many waits."""
    tasks, signals, votes = _open_waits()
    _store([*tasks, *signals], votes)
    broker.redeclare_queues()
    count = len(tasks) + len(signals)
    log.info("recovered %d waits into Redis", count)
    return count


def reconcile_waits(every: float = 30.0) -> int:
    """A sweep hook: once per ``every`` seconds across all sweepers, restore the waits Redis is missing.

    This heals a wait whose Redis write was lost (a worker died right after parking, or Redis lost its
    data) without an operator; ``recover`` does the same at once and for everything.
    """
    r = keys.client()
    if not r.set(keys.RECONCILE, "1", nx=True, ex=max(1, int(every))):
        return 0
    tasks, signals, votes = _open_waits()
    waits: list[HumanTask | SignalWait] = [*tasks, *signals]
    pipe = r.pipeline(transaction=False)
    for wait in waits:
        pipe.exists(keys.WAIT + wait.id)
    missing = [w for w, present in zip(waits, pipe.execute()) if not present]
    if missing:
        log.warning("restoring %d waits that Redis was missing", len(missing))
        broker.redeclare_queues()
        _store(missing, votes)
    return len(missing)


def restore_wait(wait_id: str) -> bool:
    """Rebuild one wait from the database if it is open and its step is parked; True if it was."""
    with db.read_session() as session:
        task = session.get(HumanTask, wait_id)
        wait = task or session.get(SignalWait, wait_id)
        if wait is None or wait.status != TaskStatus.open.value:
            return False
        row = session.get(StepRun, wait.row_id)
        if row is None or row.status != StepStatus.waiting.value:
            return False
    if task is not None:
        store_wait(task.id, HUMAN, task.run_id, task.step_id, level=task.level, payload_hash=task.payload_hash,
                   deadline=task.deadline)
    else:
        store_wait(wait.id, SIGNAL, wait.run_id, wait.step_id, deadline=wait.deadline)
    return True
