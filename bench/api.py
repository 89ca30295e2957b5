"""The rate of ``POST /v1/runs`` against bare Celery ``apply_async`` on the same machine.

    python -m bench.api [--requests 400] [--concurrency 8]

The API is served by uvicorn in a child process on loopback; each request is
authenticated, validated, recorded (run, steps, audit event) and enqueued. The
baseline publishes a no-op task with bare Celery from the same number of
threads. Prints requests per second and p99 latency of each, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, environment  # noqa: E402

SPEC = """
name: bench-api
input_schema: {type: object, required: [order_id], properties: {order_id: {type: string}}}
steps:
  - id: normalize
    uses: task:examples.normalize
    with: {text: "{{ input.order_id }}"}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _measure(call: Callable[[int], None], requests: int, concurrency: int) -> tuple[float, float]:
    """Run ``call(i)`` ``requests`` times from ``concurrency`` threads; returns (per second, p99 ms)."""
    latencies: list[float] = []

    def timed(i: int) -> None:
        start = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(timed, range(requests)))
    elapsed = time.perf_counter() - began
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else latencies[0]
    return requests / elapsed, p99 * 1000


def _serve(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    args = [sys.executable, "-m", "uvicorn", "orchestra.api:create_app", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log"]
    with open(tmp / "api.log", "ab") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"the API did not start; see {tmp / 'api.log'}")


def bench_api(tmp: Path, requests: int, concurrency: int) -> tuple[float, float]:
    from orchestra.auth import create_key
    from orchestra.workflows import register_workflow

    register_workflow(SPEC)
    headers = {"Authorization": f"Bearer {create_key('bench-service', 'submitter')}"}
    proc, url = _serve(tmp)
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30,
                          limits=httpx.Limits(max_connections=concurrency)) as http:
            for i in range(20):  # warm up connections and caches
                http.post("/v1/runs", json={"workflow": "bench-api", "input": {"order_id": f"warm-{i}"}})

            def submit(i: int) -> None:
                response = http.post("/v1/runs", json={"workflow": "bench-api", "input": {"order_id": f"o-{i}"}})
                if response.status_code != 202:
                    raise RuntimeError(f"POST /v1/runs answered {response.status_code}: {response.text[:300]}")

            return _measure(submit, requests, concurrency)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def bench_celery(requests: int, concurrency: int) -> tuple[float, float]:
    from bench.bare import noop

    for _ in range(20):
        noop.apply_async()
    return _measure(lambda i: noop.apply_async(args=(i,)) and None, requests, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with environment() as tmp:
        api_rate, api_p99 = bench_api(tmp, args.requests, args.concurrency)
        celery_rate, celery_p99 = bench_celery(args.requests, args.concurrency)
    print(f"POST /v1/runs          {api_rate:8.1f} req/s   p99 {api_p99:7.1f} ms   "
          f"({args.requests} requests, {args.concurrency} clients, {os.environ.get('ORCHESTRA_DATABASE_URL', '')[:10]})")
    print(f"bare Celery apply_async {celery_rate:8.1f} msg/s   p99 {celery_p99:7.1f} ms")
    print(f"ratio (API / bare Celery): {api_rate / celery_rate:.3f}  (bare Celery is {celery_rate / api_rate:.1f}x faster)")


if __name__ == "__main__":
    main()
