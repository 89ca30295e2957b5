"""Durability on real worker processes: a worker killed mid-step, and a step longer than the visibility timeout."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter

from orchestra.runs import submit_run
from tests.support.harness import wait_for_run, wait_until


def test_kill_9_of_a_worker_mid_step_finishes_the_run_without_rerunning_succeeded_steps(
    isolated_workers, register, redis_client
):
    key = f"kill-{uuid.uuid4().hex[:8]}"
    name = key
    register(f"""
name: {name}
steps:
  - {{id: before, uses: "task:tests.support.steps.count", with: {{key: {key}:before, value: 1}}}}
  - {{id: long, uses: "task:tests.support.steps.slow", with: {{key: {key}:long, seconds: 4}}}}
  - {{id: after, uses: "task:tests.support.steps.count", with: {{key: {key}:after, value: 2}}}}
""")
    doomed = isolated_workers(concurrency=1)
    run, _ = submit_run(name, {})
    wait_until(lambda: redis_client.get(f"{key}:long:started") == "1", timeout=30, what="the long step to start")
    doomed.kill9()
    killed_at = time.monotonic()
    isolated_workers(concurrency=2)
    view = wait_for_run(run.id, statuses=("succeeded", "failed"), timeout=60)
    assert view["status"] == "succeeded"
    assert time.monotonic() - killed_at < 60
    assert redis_client.get(f"{key}:before") == "1"  # never executed a second time
    assert redis_client.get(f"{key}:long:started") == "2"  # re-run after its lease lapsed
    assert redis_client.get(f"{key}:long:done") == "1"
    assert redis_client.get(f"{key}:after") == "1"
    long_step = next(s for s in view["steps"] if s["id"] == "long")
    assert long_step["attempts"] == 2


def test_a_step_longer_than_the_visibility_timeout_runs_exactly_once(isolated_workers, register, redis_client):
    key = f"vis-{uuid.uuid4().hex[:8]}"
    register(f"""
name: {key}
steps:
  - {{id: long, uses: "task:tests.support.steps.slow", with: {{key: {key}, seconds: 14}}}}
""")
    short_visibility = {"ORCHESTRA_VISIBILITY_TIMEOUT": "3"}
    workers = [isolated_workers(concurrency=2, env=short_visibility, app="tests.support.redelivering"),
               isolated_workers(concurrency=1, env=short_visibility, app="tests.support.redelivering")]
    run, _ = submit_run(key, {})

    def deliveries(outcome: str) -> Counter[str]:
        pattern = re.compile(rf"Task {re.escape(key)}\.long\[([0-9a-f-]+)\] {outcome}")
        return Counter(m for w in workers for m in pattern.findall(w.log.read_text(errors="replace")))

    # the broker hands the step's message out again while the first delivery is still running it
    redelivered = wait_until(lambda: [t for t, n in deliveries("received").items() if n >= 2], timeout=30,
                             what="the broker to redeliver the long step's message")
    view = wait_for_run(run.id, statuses=("succeeded", "failed"), timeout=60)
    assert view["status"] == "succeeded"
    wait_until(lambda: all(deliveries("succeeded").get(t, 0) >= 2 for t in redelivered), timeout=30,
               what="every delivery of the message to be done")
    assert redis_client.get(f"{key}:started") == "1"
    assert redis_client.get(f"{key}:done") == "1"
    assert view["steps"][0]["attempts"] == 1


def test_a_run_survives_a_redis_restart_that_loses_every_message(isolated_workers, register, redis_client, stack):
    key = f"restart-{uuid.uuid4().hex[:8]}"
    register(f"""
name: {key}
steps:
  - {{id: slow, uses: "task:tests.support.steps.slow", with: {{key: {key}, seconds: 3}}}}
  - {{id: after, uses: "task:tests.support.steps.count", with: {{key: {key}:after, value: 1}}}}
""")
    worker = isolated_workers(concurrency=2, supervised=True)
    run, _ = submit_run(key, {})
    wait_until(lambda: redis_client.get(f"{key}:started") == "1", timeout=30, what="the slow step to start")
    stack.redis.stop()  # no persistence: the queue, unacked messages, results and leases' counters are gone
    stack.redis.start()
    view = wait_for_run(run.id, statuses=("succeeded", "failed"), timeout=90)
    assert view["status"] == "succeeded"
    steps = {s["id"]: s for s in view["steps"]}
    assert steps["slow"]["attempts"] == 1  # the step that was running when Redis went away was not run again
    assert steps["after"]["output"] == 1
    log = worker.log.read_text()
    if "Unrecoverable error" in log:  # Celery gave up on the broker; `orchestra worker` must have restarted it
        assert "starting it again" in log
