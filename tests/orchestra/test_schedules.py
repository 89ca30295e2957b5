"""Schedules: started by the beat tick, at most once per due time, with overlap rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from tests.orchestra.api.conftest import APPROVAL, SIMPLE, unique


def _due_now(name: str) -> None:
    """Pretend the schedule's next time has come."""
    from orchestra import db
    from orchestra.models import Schedule, utcnow

    with db.write_session() as session:
        session.execute(update(Schedule).where(Schedule.name == name).values(next_run_at=utcnow() - timedelta(seconds=1)))


def _runs_of(workflow: str) -> list[Any]:
    from orchestra import db
    from orchestra.models import Run

    with db.read_session() as session:
        return list(session.scalars(select(Run).where(Run.workflow == workflow)))


def test_a_due_schedule_starts_one_run_even_if_ticked_twice(register: Any) -> None:
    from orchestra.schedules import save_schedule, start_due

    flow = unique("sched-wf")
    register(SIMPLE.format(name=flow))
    name = unique("every-minute")
    save_schedule({"name": name, "workflow": flow, "cron": "* * * * *", "input": {"order_id": "S1"}, "overlap": "allow"})
    _due_now(name)
    started = start_due() + start_due()
    runs = _runs_of(flow)
    assert len(runs) == 1 and runs[0].id in started
    assert runs[0].submitted_by == f"schedule:{name}" and runs[0].input == {"order_id": "S1"}


def test_overlap_skip_waits_for_the_previous_run_and_allow_does_not(register: Any) -> None:
    from orchestra.schedules import save_schedule, start_due

    flows = {}
    for overlap in ("skip", "allow"):
        flow = flows[overlap] = unique(f"sched-{overlap}")
        register(APPROVAL.format(name=flow))  # its runs park, so they stay unfinished
        save_schedule({"name": flow, "workflow": flow, "cron": "* * * * *", "input": {"order_id": "S"},
                       "overlap": overlap})
    for _ in range(2):
        for flow in flows.values():
            _due_now(flow)
        start_due()
    assert len(_runs_of(flows["skip"])) == 1
    assert len(_runs_of(flows["allow"])) == 2


def test_config_schedules_yaml_is_loaded(tmp_path: Any, register: Any) -> None:
    from orchestra.schedules import list_schedules, load_config_schedules

    flow = unique("sched-wf")
    register(SIMPLE.format(name=flow))
    path = tmp_path / "schedules.yaml"
    path.write_text(f"schedules:\n  - {{name: {flow}-cfg, workflow: {flow}, cron: '*/10 * * * *', "
                    "input: {order_id: C}}\n")
    assert load_config_schedules(path) == 1
    assert {"name": f"{flow}-cfg", "overlap": "skip", "enabled": True}.items() <= \
        next(s for s in list_schedules() if s["name"] == f"{flow}-cfg").items()


def test_the_celery_app_ticks_schedules_from_beat() -> None:
    from orchestra.schedules import TICK_TASK
    from workers.app import app

    assert TICK_TASK in app.tasks
    assert app.conf.beat_schedule["orchestra-schedules"]["task"] == TICK_TASK
