"""Schedules: started by the beat tick, at most once per due time, with overlap rules."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from tests.orchestra.api.conftest import APPROVAL, SIMPLE, unique
from tests.support.harness import ROOT


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


TICK = """
import json, sys, time
import redis
from orchestra import schedules
name, barrier = sys.argv[1], sys.argv[2]
r = redis.Redis.from_url(sys.argv[3])
claim = schedules._claim

def claim_together(schedule, due, following):
    if schedule == name:  # both ticks have read the schedule as due before either claims it
        r.incr(barrier)
        deadline = time.monotonic() + 30
        while int(r.get(barrier)) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
    return claim(schedule, due, following)

schedules._claim = claim_together
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(schedules.start_due()), flush=True)
"""


def test_a_due_schedule_starts_one_run_even_if_ticked_twice(register: Any, stack: Any) -> None:
    from orchestra.schedules import save_schedule

    flow = unique("sched-wf")
    register(SIMPLE.format(name=flow))
    name = unique("every-minute")
    save_schedule({"name": name, "workflow": flow, "cron": "* * * * *", "input": {"order_id": "S1"}, "overlap": "allow"})
    _due_now(name)
    barrier = f"test:barrier:{name}:{uuid.uuid4().hex}"
    ticks = [subprocess.Popen([sys.executable, "-c", TICK, name, barrier, stack.redis_url], cwd=ROOT, env=stack.env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for tick in ticks:
        assert tick.stdout is not None and tick.stdout.readline().strip() == "ready"
    for tick in ticks:  # release both at once
        assert tick.stdin is not None
        tick.stdin.write("go\n")
        tick.stdin.flush()
    outputs = [tick.communicate(timeout=60)[0] for tick in ticks]
    assert [tick.returncode for tick in ticks] == [0, 0], outputs
    runs = _runs_of(flow)
    ours = {r.id for r in runs}  # a tick also starts other tests' schedules that came due
    started = [run_id for out in outputs for run_id in json.loads(out.strip().splitlines()[-1]) if run_id in ours]
    assert len(runs) == 1
    assert started == [runs[0].id]  # one tick won the due time; the other started nothing
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
