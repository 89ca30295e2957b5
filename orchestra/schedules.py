"""Schedules: cron expressions that start runs of a workflow.

Schedules live in the database (and may be declared in ``config/schedules.yaml``).
Celery beat sends ``orchestra.schedules.tick`` every few seconds; each tick
starts the runs that came due. A due time is claimed with a compare-and-set on
``next_run_at``, and the run's idempotency key is derived from the schedule and
the due time, so two beats (or a re-delivered tick) never start the same run twice.

``overlap: skip`` does not start a run while the schedule's previous run is
still pending, running or waiting; the due time is passed over.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from sqlalchemy import select, update

from orchestra import db
from orchestra.errors import InputError, NotFound
from orchestra.models import TERMINAL_RUN, Run, Schedule, utcnow
from orchestra.workflows import get_workflow

log = logging.getLogger(__name__)

TICK_TASK = "orchestra.schedules.tick"
TICK_SECONDS = 5.0
OVERLAP = ("skip", "allow")


def _invalid(field: str, msg: str) -> InputError:
    return InputError(f"the schedule's {field} is invalid", [{"loc": ["body", field], "msg": msg, "type": "invalid"}])


def next_due(cron: str, tz: str, after: datetime) -> datetime:
    """The first time after ``after`` that ``cron`` fires in zone ``tz``, in UTC."""
    local = after.astimezone(ZoneInfo(tz))
    due: datetime = croniter(cron, local).get_next(datetime)
    return due.astimezone(ZoneInfo("UTC"))


def validate_schedule(data: dict[str, Any]) -> None:
    """Raise ``InputError`` naming the field if the cron, zone, overlap or workflow is wrong."""
    if not croniter.is_valid(str(data.get("cron", ""))):
        raise _invalid("cron", f"'{data.get('cron')}' is not a cron expression; write five fields, e.g. '*/5 * * * *'")
    try:
        ZoneInfo(str(data.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid("timezone", f"'{data.get('timezone')}' is not a time zone; use an IANA name like "
                                   "'UTC' or 'Europe/Paris'") from None
    if data.get("overlap", "skip") not in OVERLAP:
        raise _invalid("overlap", "overlap is 'skip' or 'allow'")
    try:
        get_workflow(str(data["workflow"]))
    except NotFound:
        raise _invalid("workflow", f"no workflow named '{data['workflow']}'; register it first") from None


def schedule_dict(row: Schedule) -> dict[str, Any]:
    return {"name": row.name, "workflow": row.workflow, "cron": row.cron, "timezone": row.timezone,
            "input": row.input, "overlap": row.overlap, "enabled": row.enabled,
            "next_run_at": row.next_run_at.isoformat() if row.next_run_at else None, "last_run_id": row.last_run_id}


def save_schedule(data: dict[str, Any]) -> dict[str, Any]:
    """Create or replace the schedule named ``data['name']``; its next due time is recomputed."""
    validate_schedule(data)
    tz = str(data.get("timezone", "UTC"))
    now = utcnow()
    with db.write_session() as session:
        row = session.get(Schedule, data["name"]) or Schedule(name=data["name"], created_at=now)
        row.workflow, row.cron, row.timezone = data["workflow"], data["cron"], tz
        row.input = data.get("input", {})
        row.overlap, row.enabled = data.get("overlap", "skip"), bool(data.get("enabled", True))
        row.next_run_at = next_due(row.cron, tz, now) if row.enabled else None
        row.updated_at = now
        session.add(row)
        session.flush()
        return schedule_dict(row)


def list_schedules() -> list[dict[str, Any]]:
    with db.read_session() as session:
        return [schedule_dict(r) for r in session.scalars(select(Schedule).order_by(Schedule.name))]


def delete_schedule(name: str) -> None:
    with db.write_session() as session:
        row = session.get(Schedule, name)
        if row is None:
            raise NotFound(f"no schedule named '{name}'; list them with GET /v1/schedules")
        session.delete(row)


def load_config_schedules(path: Path) -> int:
    """Save each schedule in ``config/schedules.yaml`` (a list, or ``{schedules: [...]}``); returns how many."""
    if not path.exists():
        return 0
    data = yaml.safe_load(path.read_text()) or []
    items = data.get("schedules", []) if isinstance(data, dict) else data
    for index, item in enumerate(items):
        try:
            save_schedule(dict(item))
        except InputError as exc:
            raise InputError(f"{path}: schedule {index}: {exc.message}", exc.errors) from None
    return len(items)


def _still_running(run_id: str | None) -> bool:
    if run_id is None:
        return False
    with db.read_session() as session:
        run = session.get(Run, run_id)
    return run is not None and run.status not in TERMINAL_RUN


def _claim(name: str, due: datetime, following: datetime) -> bool:
    """Move ``next_run_at`` from ``due`` to ``following``; True if this caller won the due time."""
    with db.write_session() as session:
        won = session.execute(update(Schedule).where(Schedule.name == name, Schedule.next_run_at == due)
                              .values(next_run_at=following, updated_at=utcnow())).rowcount  # type: ignore[attr-defined]
    return bool(won)


def start_due(now: datetime | None = None) -> list[str]:
    """Start a run for every schedule that came due; returns the new run ids."""
    from orchestra.errors import NotEnqueued
    from orchestra.runs import submit_run

    now = now or utcnow()
    with db.read_session() as session:
        due = list(session.scalars(select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)))
    started: list[str] = []
    for row in due:
        assert row.next_run_at is not None
        if not _claim(row.name, row.next_run_at, next_due(row.cron, row.timezone, now)):
            continue
        if row.overlap == "skip" and _still_running(row.last_run_id):
            log.info("schedule %s: run %s has not ended; skipping %s", row.name, row.last_run_id, row.next_run_at)
            continue
        key = f"schedule:{row.name}:{row.next_run_at.isoformat()}"
        try:
            run, _ = submit_run(row.workflow, row.input, idempotency_key=key, actor=f"schedule:{row.name}")
        except NotEnqueued as exc:
            run_id = exc.run_id  # recorded; the sweeper dispatches it
        except Exception:
            log.exception("schedule %s could not start a run of %s", row.name, row.workflow)
            continue
        else:
            run_id = run.id
        with db.write_session() as session:
            session.execute(update(Schedule).where(Schedule.name == row.name).values(last_run_id=run_id))
        started.append(run_id)
    return started


def register_beat(app: Any) -> None:
    """Add the tick task and its beat entry to a Celery app."""

    @app.task(name=TICK_TASK, ignore_result=True)
    def tick() -> int:
        return len(start_due())

    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}),
                              "orchestra-schedules": {"task": TICK_TASK, "schedule": TICK_SECONDS}}
