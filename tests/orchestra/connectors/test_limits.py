"""Shared rate and concurrency limits in Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from orchestra.errors import RateLimited
from orchestra.connectors.limits import concurrency_slot, take_token
from tests.support.harness import ROOT

COUNT_TOKENS = """
import sys, time
from orchestra.errors import RateLimited
from orchestra.connectors.limits import take_token
from orchestra.keys import client
name, rate, window = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
client().ping()  # imported and connected: only the counting is left
print("ready", flush=True)
until = float(sys.stdin.readline())
while time.time() < until - window:
    time.sleep(0.01)
taken = []
while time.time() < until:
    try:
        take_token(name, rate, 1)
        taken.append(time.time())
    except RateLimited as exc:
        time.sleep(min(exc.retry_after, 0.01))
print(len(taken), flush=True)
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_the_bucket_gives_a_burst_then_holds_back_with_the_time_to_wait():
    name = unique("bucket")
    for _ in range(5):
        take_token(name, 5, 5)

    with pytest.raises(RateLimited) as caught:
        take_token(name, 5, 5)

    assert caught.value.retryable and caught.value.holds_back
    assert 0 < caught.value.retry_after <= 0.2


def test_the_bucket_refills_at_its_rate():
    name = unique("bucket")
    take_token(name, 10, 1)
    with pytest.raises(RateLimited) as caught:
        take_token(name, 10, 1)

    time.sleep(caught.value.retry_after + 0.02)

    take_token(name, 10, 1)


def test_a_rate_limit_holds_across_two_processes():
    name, rate, window = unique("shared"), 10.0, 2.0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", COUNT_TOKENS, name, str(rate), str(window)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:  # however long a loaded machine takes to start them
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    until = time.time() + 0.5 + window  # both start counting at the same moment, after both are ready
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{until}\n")
        proc.stdin.flush()
    counts = [int(p.communicate(timeout=30)[0].strip()) for p in procs]

    assert sum(counts) <= rate * window + 2  # one token of burst, one of timing slack
    assert sum(counts) >= rate * window * 0.5
    assert min(counts) > 0


def test_a_semaphore_caps_calls_in_flight_and_frees_the_slot_after():
    name = unique("sem")
    with concurrency_slot(name, 2, 10), concurrency_slot(name, 2, 10):
        with pytest.raises(RateLimited) as caught:
            with concurrency_slot(name, 2, 10):
                pass
        assert caught.value.holds_back and caught.value.retry_after <= 0.5

    with concurrency_slot(name, 2, 10):
        pass


def test_a_slot_held_by_a_dead_worker_frees_when_its_lease_ends():
    name = unique("sem")
    held = concurrency_slot(name, 1, 0.3)
    held.__enter__()  # never exited, as when a worker is killed mid-call
    with pytest.raises(RateLimited):
        with concurrency_slot(name, 1, 10):
            pass

    time.sleep(0.4)

    with concurrency_slot(name, 1, 10):
        pass


def test_config_rates_parse_or_say_how_to_write_them():
    from orchestra.connectors.base import parse_rate

    assert parse_rate("20/s") == 20 and parse_rate("600/m") == 10 and parse_rate("36/hour") == 0.01
    with pytest.raises(ValueError, match="write it like '20/s'"):
        parse_rate("fast")


def test_an_http_connector_at_its_concurrency_cap_holds_the_step_back(payments, connectors, make_call):
    from orchestra.connectors.registry import get_connector
    from orchestra.steps.kinds import get_kind

    connectors(f"""
connectors:
  payments:
    kind: http
    base_url: {payments.url}
    allow: {{methods: [POST], paths: ["/slow*"]}}
    max_concurrency: 1
""")
    call = make_call({"name": "slow", "connectors": ["payments"], "steps": [
        {"id": "pay", "uses": "http:payments", "with": {"method": "POST", "path": "/slow?seconds=1"}}]}, "pay")
    with concurrency_slot("payments", 1, 10):  # another worker's call in flight
        with pytest.raises(RateLimited):
            get_kind("http").execute(call)

    assert payments.requests == []
    assert get_kind("http").execute(call)["status"] == 201
    assert json.dumps(get_connector("payments").config.max_concurrency) == "1"
