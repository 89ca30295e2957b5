"""The step-duration histogram is counted by the database and lands in the right buckets."""

from __future__ import annotations

import uuid
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from orchestra import db, metrics
from orchestra.models import StepRun, utcnow
from orchestra.runs import submit_run


def test_step_durations_fall_in_cumulative_buckets_with_their_sum(register):
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    register(f"name: {name}\nsteps:\n" + "".join(f"  - {{id: s{i}, uses: 'task:tests.support.steps.noop'}}\n"
                                                    for i in range(4)))
    run, _ = submit_run(name, {}, dispatch=False)
    durations = {"s0": 0.3, "s1": 2.0, "s2": 100.0}  # s3 never ran: not counted
    start = utcnow()
    with db.write_session() as session:
        for row in session.scalars(select(StepRun).where(StepRun.run_id == run.id)):
            if row.step_id in durations:
                row.started_at, row.finished_at = start, start + timedelta(seconds=durations[row.step_id])

    samples = {(s.name, s.labels.get("le")): s.value
               for family in text_string_to_metric_families(metrics.render().decode())
               if family.name == "orchestra_step_duration_seconds"
               for s in family.samples if s.labels.get("workflow") == name}
    assert samples[("orchestra_step_duration_seconds_count", None)] == 3
    assert abs(samples[("orchestra_step_duration_seconds_sum", None)] - 102.3) < 0.01
    bucket = {le: value for (sample, le), value in samples.items() if sample.endswith("_bucket")}
    assert bucket["0.25"] == 0 and bucket["0.5"] == 1 and bucket["2.5"] == 2
    assert bucket["60.0"] == 2 and bucket["300.0"] == 3 and bucket["+Inf"] == 3
