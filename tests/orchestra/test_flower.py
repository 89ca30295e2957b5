"""Flower tells the truth: an Orchestra step that fails ends its Celery task in FAILURE, with the error."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orchestra.runs import submit_run
from tests.support.harness import ROOT, wait_for_run, wait_until

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def flower(stack: Any, tmp_path: Any) -> Iterator[str]:
    port = _free_port()
    env = {**stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    log = open(tmp_path / "flower.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "flower", "--address=127.0.0.1",
                                f"--port={port}"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/api/workers", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=60, what="Flower to answer")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _tasks_of(url: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Flower's view of the run's step tasks, by the step they ran."""
    tasks = httpx.get(f"{url}/api/tasks", params={"limit": 1000}, timeout=5).json()
    return {str(t.get("args")): t for t in tasks.values() if run_id in str(t.get("args"))}


def test_flower_shows_a_failed_step_as_failure_with_its_error_and_a_good_one_as_success(workers, register, flower):
    name = f"flower-{uuid.uuid4().hex[:8]}"
    register(f"""
name: {name}
steps:
  - {{id: good, uses: "task:tests.support.steps.add", with: {{a: 1, b: 2}}}}
  - id: bad
    uses: "task:tests.support.steps.flaky"
    with: {{key: {name}, fail_times: 5}}
    retry: {{attempts: 2, backoff: 100ms}}
""")
    warm_up = f"{name}-warm-up"
    register(f"name: {warm_up}\nsteps: [{{id: only, uses: 'task:tests.support.steps.noop'}}]")
    first, _ = submit_run(warm_up, {})
    wait_until(lambda: _tasks_of(flower, first.id), timeout=60, what="Flower to capture task events")

    run, _ = submit_run(name, {})
    assert wait_for_run(run.id, statuses=("succeeded", "failed"))["status"] == "failed"

    def settled() -> dict[str, dict[str, Any]] | None:
        seen = _tasks_of(flower, run.id)
        states = sorted(t["state"] for t in seen.values())
        return seen if states == ["FAILURE", "SUCCESS"] else None

    seen = wait_until(settled, timeout=30, what=f"Flower to see both steps end (it saw {_tasks_of(flower, run.id)})")
    good = next(t for args, t in seen.items() if "'good'" in args)
    bad = next(t for args, t in seen.items() if "'bad'" in args)
    assert good["state"] == "SUCCESS"
    assert bad["state"] == "FAILURE"
    assert "StepFailed" in bad["exception"] and "flaky failure number 2" in bad["exception"]
