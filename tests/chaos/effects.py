"""The loopback effects server: the system of record every chaos step acts on, and its witness.

A stdlib threaded HTTP server on a free port, in the test process. Worker
processes reach it through ``ORCHESTRA_CHAOS_URL`` (the ``chaos`` connectors'
``base_url_env``, and ``tasks/chaos.py``). It keeps, in memory and so beyond the
reach of a Redis FLUSHALL:

- ``requests``: every http step request, with method, path, ``Idempotency-Key``
  header and body;
- ``http_effects``: effects applied, at most one per ``Idempotency-Key``
  (``POST /effect/<step>``); ``?fail_times=N`` answers 503 to the first N
  requests of a key and ``?slow_times=N&slow_seconds=S`` sleeps S seconds on
  them first (a step timeout abandons the call);
- ``executions``: every execution of a ``task:chaos.work`` step, numbered per
  run/step/item (``POST /exec/start``, ``/exec/end``), and ``task_effects``, the
  effects those executions recorded (``POST /effect``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    server: EffectsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        status, payload = self.server.handle(self.path, dict(self.headers), body)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the caller gave up (a step timeout, a killed worker)
            pass


class EffectsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.http_effects: Counter[str] = Counter()
        self.http_answers: dict[str, Any] = {}
        self.executions: list[dict[str, Any]] = []
        self.task_effects: dict[tuple[str, str, int], list[int]] = {}  # the worker (main pid) of each effect
        self.numbers: Counter[tuple[str, str, int]] = Counter()
        self.in_flight = 0
        self.killed_pids: set[int] = set()
        self.thread = threading.Thread(target=self.serve_forever, name="chaos-effects", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> EffectsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    # -- routes -----------------------------------------------------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = urlsplit(path)
        if parts.path == "/exec/start":
            return 200, self._exec_start(body)
        if parts.path == "/exec/end":
            return 200, self._exec_end(body)
        if parts.path == "/effect":
            with self.lock:
                execution = self.executions[int(body["execution"])]
                self.task_effects.setdefault((body["run"], body["step"], int(body["item"])), []).append(
                    execution["ppid"])
            return 200, {"ok": True}
        if parts.path.startswith("/effect/"):
            return self._http_effect(parts.path, parse_qs(parts.query), headers, body)
        return 404, {"error": f"no route {path}"}

    def _exec_start(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            key = (body["run"], body["step"], int(body["item"]))
            self.numbers[key] += 1
            record = {**body, "id": len(self.executions), "n": self.numbers[key], "started": time.monotonic(),
                      "ended": None, "outcome": None}
            self.executions.append(record)
            return {"n": record["n"], "id": record["id"]}

    def _exec_end(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            record = self.executions[int(body["id"])]
            if record["ended"] is None:  # "killed" is reported before the kill; nothing follows it
                record["ended"], record["outcome"] = time.monotonic(), body["outcome"]
        return {"ok": True}

    def _http_effect(self, path: str, query: dict[str, list[str]], headers: dict[str, str],
                     body: Any) -> tuple[int, Any]:
        key = next((v for k, v in headers.items() if k.lower() == "idempotency-key"), "")
        with self.lock:
            self.in_flight += 1
            count = 1 + sum(1 for r in self.requests if r["key"] == key)
            self.requests.append({"method": "POST", "path": path, "key": key, "body": body,
                                  "at": time.monotonic(), "n": count})
        try:
            if count <= int(query.get("slow_times", ["0"])[0]):
                time.sleep(float(query.get("slow_seconds", ["3"])[0]))
            if count <= int(query.get("fail_times", ["0"])[0]):
                return 503, {"error": f"chaos 503 number {count}"}
            with self.lock:
                if key not in self.http_answers:  # the effect: once per Idempotency-Key
                    self.http_effects[key] += 1
                    self.http_answers[key] = {"effect": len(self.http_answers) + 1, "key": key, "body": body}
                return 200, self.http_answers[key]
        finally:
            with self.lock:
                self.in_flight -= 1

    def mark_killed(self, pid: int) -> int:
        """Executions in flight on the worker whose main process was ``pid`` end as killed; returns how many.

        A task's own side effect is at-least-once across a worker's death: the worker may die after the
        function recorded it and before the runtime recorded the step's success (only connector calls carry
        an idempotency key). ``task_effect_count`` counts the effects made on killed workers as one at most.
        """
        with self.lock:
            self.killed_pids.add(pid)
            hit = [e for e in self.executions if e["ended"] is None and e["ppid"] == pid]
            for e in hit:
                e["ended"], e["outcome"] = time.monotonic(), "killed with its worker"
        return len(hit)

    # -- what the driver and the oracle read ----------------------------------------------------------------

    def busy(self) -> bool:
        """Whether a request is being answered or a task execution is between its start and its end."""
        with self.lock:
            return self.in_flight > 0 or any(e["ended"] is None for e in self.executions)

    def task_effect_count(self, run_id: str, step_id: str, item: int) -> int:
        with self.lock:
            pids = self.task_effects.get((run_id, step_id, item), [])
            on_killed = sum(1 for p in pids if p in self.killed_pids)
            return len(pids) - on_killed + min(on_killed, 1)

    def executions_of(self, run_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(e) for e in self.executions if e["run"] == run_id]

    def requests_of(self, run_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.requests if r["key"].startswith(run_id + ":")]

    def started(self, run_id: str, step_id: str, item: int | None = None) -> dict[str, Any] | None:
        """The first execution (task) or request (http) of a step or item, or None."""
        with self.lock:
            for e in self.executions:
                if e["run"] == run_id and e["step"] == step_id and (item is None or e["item"] == item):
                    return dict(e)
            for r in self.requests:
                run, _, rest = r["key"].partition(":")
                sid, _, it = rest.rpartition(":")
                if run == run_id and sid == step_id and (item is None or it == str(item)):
                    return dict(r)
        return None
