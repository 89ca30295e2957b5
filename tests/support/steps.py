"""Step functions for the tests. Side effects are counted in Redis so tests can see them."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from orchestra.keys import client
from orchestra.steps.task import step


@step
def count(key: str, value: Any = None) -> Any:
    """Count one execution under ``key`` and return ``value``."""
    client().incr(key)
    return value


@step
def flaky(key: str, fail_times: int) -> dict[str, int]:
    """Fail the first ``fail_times`` executions, then succeed."""
    attempt = int(client().incr(key))
    if attempt <= fail_times:
        raise RuntimeError(f"flaky failure number {attempt}")
    return {"attempt": attempt}


@step
def slow(key: str, seconds: float) -> float:
    """Mark start, sleep, mark end."""
    client().incr(f"{key}:started")
    time.sleep(seconds)
    client().incr(f"{key}:done")
    return seconds


@step
def probe(key: str, seconds: float = 0.2, item: Any = None) -> Any:
    """Record the highest number of concurrent executions seen under ``key``."""
    r = client()
    now = int(r.incr(f"{key}:now"))
    r.eval("if tonumber(redis.call('get', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('set', KEYS[1], ARGV[1]) end",
           1, f"{key}:max", now)
    time.sleep(seconds)
    r.decr(f"{key}:now")
    r.incr(f"{key}:total")
    return item


@step
def gate(key: str, timeout: float = 60.0) -> str:
    """Set ``{key}:waiting``, then hold the worker until the test sets ``{key}:open``."""
    r = client()
    r.set(f"{key}:waiting", 1)
    deadline = time.monotonic() + timeout
    while not r.exists(f"{key}:open"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gate {key} was not opened within {timeout}s")
        time.sleep(0.02)
    return "opened"


@step
def add(a: float, b: float) -> float:
    return a + b


@step
def noop() -> None:
    return None


@step
def returns(kind: str) -> Any:
    """Return something that cannot be stored as JSON: a float NaN, a set, or an unpaired surrogate."""
    return {"nan": float("nan"), "set": {1, 2}, "surrogate": "\ud800"}[kind]


@step
def flaky_each(key: str, value: Any, fail_times: int) -> Any:
    """Record ``value`` under ``key``, then fail the first ``fail_times`` executions for that value."""
    r = client()
    r.rpush(f"{key}:seen", json.dumps(value))
    if int(r.incr(f"{key}:{json.dumps(value)}")) <= fail_times:
        raise RuntimeError(f"flaky failure for {value!r}")
    return value


@step
def die(key: str) -> None:
    """Count one start under ``key``, then kill this worker process outright, as an out-of-memory kill would."""
    client().incr(key)
    os.kill(os.getpid(), signal.SIGKILL)


@step
def linger(key: str, seconds: float) -> float:
    """Mark ``{key}:started``, sleep, then mark ``{key}:done``; ``{key}:interrupted`` if it was stopped instead."""
    r = client()
    r.incr(f"{key}:started")
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(0.05)
    except BaseException:
        r.incr(f"{key}:interrupted")
        raise
    r.incr(f"{key}:done")
    return seconds
