"""Loopback stand-ins for the systems of record: a payments service and a chat-completions server.

Both are stdlib ``http.server`` servers on a free port in a daemon thread. The
payments service can also run as its own process (``python -m
tests.orchestra.connectors.servers payments PORT STATE_FILE``) so that worker
processes, and the tests watching them, share one view of its effects.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        status, headers, payload = self.server.route(self.command, self.path, dict(self.headers), body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", headers.pop("content-type", "application/json"))
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server whose ``route`` subclasses decide every answer."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> LoopbackServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def route(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body,
                                  "at": time.monotonic()})
        return self.answer(method, path, {k.lower(): v for k, v in headers.items()}, body)

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError


class Payments(LoopbackServer):
    """Refunds, applied once per ``Idempotency-Key``.

    - ``POST /refunds``: 503 twice per new key, then the refund (a repeat of a key returns the first refund).
    - ``POST /busy``: 429 with ``Retry-After: 1`` on the first call per key, then 200.
    - ``POST /slow?seconds=N``: sleeps, then refunds (for kills mid-call).
    - ``POST /invalid``: 422 with a body explaining why.
    - ``GET /refunds/<key>``: the refund recorded under that key.
    """

    def __init__(self, state_file: Path | None = None, flaky: int = 2) -> None:
        super().__init__()
        self.flaky = flaky
        self.state_file = state_file
        self.attempts: Counter[str] = Counter()  # requests per idempotency key
        self.refunds: dict[str, dict[str, Any]] = {}  # effective refunds per key
        self.applied = 0  # refunds actually applied (a double refund would make this exceed len(refunds))
        self.hold_after_apply = 0.0  # seconds to sit on the answer after applying a refund (kill the caller here)

    def _save(self) -> None:
        if self.state_file is not None:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"attempts": self.attempts, "refunds": self.refunds, "applied": self.applied}))
            tmp.replace(self.state_file)

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        key = headers.get("idempotency-key", "")
        route = path.split("?", 1)[0]
        if method == "GET" and route.startswith("/refunds/"):
            found = self.refunds.get(route.removeprefix("/refunds/"))
            return (200, {}, found) if found else (404, {}, {"error": "no such refund"})
        if method == "GET" and route == "/echo":
            return 200, {}, {"headers": headers, "path": path}
        if route == "/invalid":
            return 422, {}, {"error": "amount must be positive"}
        if route == "/text":
            return 200, {"content-type": "text/plain"}, b"plain words"
        with self.lock:
            self.attempts[key] += 1
            count = self.attempts[key]
            self._save()
        if route == "/busy" and count == 1:
            return 429, {"retry-after": "1"}, {"error": "slow down"}
        if route == "/storm":
            return 429, {"retry-after": "30"}, {"error": "slow down"}
        if route == "/down":
            return 503, {}, {"error": "down"}
        if route == "/refunds" and count <= self.flaky and key not in self.refunds:
            return 503, {}, {"error": "temporarily unavailable"}
        if route.startswith("/slow"):
            time.sleep(float(path.split("seconds=", 1)[1]) if "seconds=" in path else 2.0)
        status, refund = self._refund(key, body, headers.get("authorization") or headers.get("x-api-key"))
        if status == 201 and self.hold_after_apply:
            time.sleep(self.hold_after_apply)
        return status, {}, refund

    def _refund(self, key: str, body: Any, credential: str | None) -> tuple[int, Any]:
        with self.lock:
            if key and key in self.refunds:
                return 200, self.refunds[key]
            self.applied += 1
            # echoes the credential it saw, as careless systems do: the connector must redact it by value
            refund = {"refund_id": f"rf-{self.applied}", "key": key, "request": body, "seen": credential}
            if key:
                self.refunds[key] = refund
            self._save()
            return 201, refund


def completion(content: str | None = None, tool_calls: list[dict[str, Any]] | None = None,
               usage: tuple[int, int] = (10, 5), model: str = "loopback-model") -> dict[str, Any]:
    """An OpenAI chat-completions response body."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                                 for i, c in enumerate(tool_calls)]
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


class ChatCompletions(LoopbackServer):
    """``POST /v1/chat/completions`` answering from a script: one callable per request, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[Callable[[dict[str, Any]], tuple[int, Any]]] = []
        self.bodies: list[dict[str, Any]] = []

    def then(self, status: int = 200, **kwargs: Any) -> ChatCompletions:
        """Queue the next answer: ``completion(**kwargs)`` with ``status``."""
        self.script.append(lambda body: (status, completion(**kwargs) if status == 200 else {"error": "x"}))
        return self

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        if method != "POST" or path != "/v1/chat/completions":
            return 404, {}, {"error": f"no route {method} {path}"}
        with self.lock:
            self.bodies.append({"headers": headers, "body": body})
            step = self.script.pop(0) if self.script else (lambda b: (500, {"error": "script ran out"}))
        status, payload = step(body)
        return status, {}, payload


def _serve_payments(port: int, state_file: str) -> None:
    server = Payments(Path(state_file))
    server.server_close()
    ThreadingHTTPServer.__init__(server, ("127.0.0.1", port), _Handler)
    server._save()
    server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "payments":
        _serve_payments(int(sys.argv[2]), sys.argv[3])
