"""Step functions for the randomized fault test (``tests/chaos``).

Every execution reports to the test's loopback effects server
(``ORCHESTRA_CHAOS_URL``), not to Redis: the fault schedule flushes Redis, and
the counts that decide when a step stops failing must survive that. The server
numbers the executions of each run/step/item, so "fail the first N times" and
"kill the worker the first N times" are decided there, once per execution.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

import httpx

from orchestra.steps.task import step

if TYPE_CHECKING:
    from orchestra.steps.base import StepCall

ALWAYS = 99  # kills: every execution kills its worker


_clients: dict[int, httpx.Client] = {}


def _client() -> httpx.Client:
    """One pooled client per process (a fresh one after a fork): a fast execution stays fast under load."""
    found = _clients.get(os.getpid())
    if found is None:
        found = _clients[os.getpid()] = httpx.Client(base_url=os.environ["ORCHESTRA_CHAOS_URL"], timeout=10.0)
    return found


def _post(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the effects server; ``/exec/start`` is not repeated (the server numbers executions by it)."""
    for attempt in range(1 if path == "/exec/start" else 5):
        try:
            response = _client().post(path, json=body)
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            return answer
        except httpx.HTTPError:
            if attempt == 4 or path == "/exec/start":
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


@step
def work(label: str, value: Any = None, fail_times: int = 0, kills: int = 0, sleep: float = 0.0,
         slow_times: int = 0, slow_seconds: float = 0.0, call: StepCall | None = None, item: Any = None) -> Any:
    """One execution of a chaos step: report it, then fail, kill the worker, sleep or succeed as told.

    The Nth execution of a run/step/item (numbered by the server) kills its own worker process when
    ``N <= kills``, raises when ``N <= fail_times`` and sleeps ``slow_seconds`` (past its timeout) when
    ``N <= slow_times``; otherwise it sleeps ``sleep`` and records its one effect.
    """
    assert call is not None
    started = _post("/exec/start", {"run": call.run_id, "step": call.step_id, "item": call.item, "label": label,
                                    "item_value": item, "value": value, "attempt": call.attempt,
                                    "pid": os.getpid(), "ppid": os.getppid()})
    number, execution = int(started["n"]), started["id"]
    outcome = "error"
    try:
        if number <= kills:
            _post("/exec/end", {"id": execution, "outcome": "killed"})
            os.kill(os.getpid(), signal.SIGKILL)
        if number <= fail_times:
            outcome = "failed"
            raise RuntimeError(f"chaos failure {number} of {fail_times} for {label}")
        if number <= slow_times:
            outcome = "slow"
            time.sleep(slow_seconds)
        elif sleep:
            time.sleep(sleep)
        _post("/effect", {"run": call.run_id, "step": call.step_id, "item": call.item, "execution": execution})
        outcome = "succeeded"
        return {"value": value, "item": item}
    except BaseException as exc:  # a soft time limit lands here too
        if outcome != "failed":
            outcome = f"interrupted: {type(exc).__name__}"
        raise
    finally:
        _post("/exec/end", {"id": execution, "outcome": outcome})
