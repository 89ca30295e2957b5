"""DEMO systems of record for ``make run``: a payments API, a CRM and a seeded order book.

None of this is a real system. ``orchestra demo-systems`` seeds a small SQLite
business database (``var/business.db``: ``orders``, ``contacts``, and the demo
services' own ``refunds`` and ``notes``) and serves, on one loopback port
(127.0.0.1:8100 by default, where ``config/connectors.yaml`` points):

- payments: ``POST /refunds`` applies a refund once per ``Idempotency-Key`` (the
  same key returns the same refund; the same key with another body gets 409),
  ``GET /refunds/{refund id or idempotency key}``, ``GET /health``;
- CRM under ``/crm``: ``GET /crm/contacts/{id}``, ``POST /crm/notes`` (also once
  per key), ``GET /crm/health``.

When ``ORCHESTRA_PAYMENTS_TOKEN`` or ``ORCHESTRA_CRM_API_KEY`` is set, the
matching service requires it, as the connectors send it. Every answer carries
``"demo": true`` so it cannot be mistaken for a real system's.
"""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
import threading
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("orchestra.demo")

SYSTEM = "orchestra demo-systems (a DEMO, not a real system of record)"
DEFAULT_PORT = 8100

Answer = tuple[int, dict[str, Any]]

ORDERS = [  # id, customer, amount, currency, status
    ("A1", "ann", 42.50, "EUR", "delivered"),
    ("A2", "bob", 250.00, "EUR", "delivered"),
    ("A3", "cho", 19.99, "EUR", "shipped"),
    ("B7", "dev", 1250.00, "USD", "delivered"),
]
CONTACTS = [  # id, name, email, tier
    ("ann", "Ann Archer", "ann@example.com", "gold"),
    ("bob", "Bob Baker", "bob@example.com", "standard"),
    ("cho", "Cho Chen", "cho@example.com", "standard"),
    ("dev", "Dev Dutta", "dev@example.com", "enterprise"),
]
_SCHEMA = """
create table if not exists orders (id text primary key, customer text not null, amount real not null,
                                   currency text not null, status text not null);
create table if not exists contacts (id text primary key, name text not null, email text not null, tier text not null);
create table if not exists refunds (refund_id text primary key, idempotency_key text unique not null,
                                    order_id text not null, amount real not null, currency text not null,
                                    request text not null, created_at text not null);
create table if not exists notes (note_id text primary key, idempotency_key text unique not null,
                                  request text not null, created_at text not null);
"""


def seed(database: Path) -> int:
    """Create the demo tables and insert the demo orders and contacts if absent; returns the order count."""
    database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as conn:
        conn.executescript(_SCHEMA)
        conn.executemany("insert or ignore into orders values (?, ?, ?, ?, ?)", ORDERS)
        conn.executemany("insert or ignore into contacts values (?, ?, ?, ?)", CONTACTS)
        count = conn.execute("select count(*) from orders").fetchone()[0]
    conn.close()
    return int(count)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _demo(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "demo": True, "system": SYSTEM}


class DemoStore:
    """The demo services' records in the business database, one writer at a time."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.database, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def _one(self, query: str, *params: Any) -> dict[str, Any] | None:
        conn = self._connect()
        try:
            row = conn.execute(query, params).fetchone()
        finally:
            conn.close()
        return dict(row) if row else None

    def refund(self, key: str, body: dict[str, Any]) -> Answer:
        """Apply a refund once per ``key``; a repeat returns the first refund."""
        with self.lock:
            found = self._one("select * from refunds where idempotency_key = ?", key)
            if found:
                return self._replay(found, body, "refund")
            problem, order = self._check_refund(body)
            if problem or order is None:
                return problem or (422, _demo({"error": "bad refund"}))
            amount = float(body.get("amount", order["amount"]))
            conn = self._connect()
            try:
                with conn:
                    number = conn.execute("select count(*) from refunds").fetchone()[0] + 1
                    refund_id = f"demo-rf-{number:04d}"
                    conn.execute("insert into refunds values (?, ?, ?, ?, ?, ?, ?)",
                                 (refund_id, key, order["id"], amount, order["currency"], json.dumps(body), _now()))
            finally:
                conn.close()
            return 201, self.refund_view(self._one("select * from refunds where refund_id = ?", refund_id) or {})

    def _check_refund(self, body: dict[str, Any]) -> tuple[Answer | None, dict[str, Any] | None]:
        order_id = body.get("order_id")
        if not isinstance(order_id, str):
            return (422, _demo({"error": "order_id is required: send {\"order_id\": \"A1\", \"amount\": 42.5}"})), None
        order = self._one("select * from orders where id = ?", order_id)
        if order is None:
            return (404, _demo({"error": f"no order {order_id}"})), None
        amount = body.get("amount", order["amount"])
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not 0 < amount <= order["amount"]:
            return (422, _demo({"error": f"amount must be a number above 0 and at most the order's "
                                         f"{order['amount']}; got {amount!r}"})), None
        return None, order

    def _replay(self, found: dict[str, Any], body: dict[str, Any], what: str) -> Answer:
        if json.loads(found["request"]) != body:
            return 409, _demo({"error": f"Idempotency-Key was already used for another {what} request; "
                                        "send a new key for a new request"})
        return 200, self.refund_view(found) if what == "refund" else self.note_view(found)

    @staticmethod
    def refund_view(row: dict[str, Any]) -> dict[str, Any]:
        return _demo({"refund_id": row.get("refund_id"), "order_id": row.get("order_id"), "amount": row.get("amount"),
                      "currency": row.get("currency"), "status": "succeeded",
                      "idempotency_key": row.get("idempotency_key"), "created_at": row.get("created_at")})

    def get_refund(self, ref: str) -> dict[str, Any] | None:
        """A refund by its id or by the idempotency key that created it."""
        row = self._one("select * from refunds where refund_id = ? or idempotency_key = ?", ref, ref)
        return self.refund_view(row) if row else None

    def refund_count(self) -> int:
        """How many refunds were applied (a double refund would show here)."""
        row = self._one("select count(*) as n from refunds")
        return int(row["n"]) if row else 0

    def note(self, key: str, body: dict[str, Any]) -> Answer:
        """Record a CRM note once per ``key``."""
        with self.lock:
            found = self._one("select * from notes where idempotency_key = ?", key)
            if found:
                return self._replay(found, body, "note")
            conn = self._connect()
            try:
                with conn:
                    number = conn.execute("select count(*) from notes").fetchone()[0] + 1
                    note_id = f"demo-note-{number:04d}"
                    conn.execute("insert into notes values (?, ?, ?, ?)", (note_id, key, json.dumps(body), _now()))
            finally:
                conn.close()
            return 201, self.note_view(self._one("select * from notes where note_id = ?", note_id) or {})

    @staticmethod
    def note_view(row: dict[str, Any]) -> dict[str, Any]:
        return _demo({"note_id": row.get("note_id"), "idempotency_key": row.get("idempotency_key"),
                      "note": json.loads(row.get("request") or "null"), "created_at": row.get("created_at")})

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        row = self._one("select * from contacts where id = ?", contact_id)
        return _demo(row) if row else None


class _Handler(BaseHTTPRequestHandler):
    server: DemoSystems

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        status, payload = self.server.route(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                            body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer


class DemoSystems(ThreadingHTTPServer):
    """The DEMO payments and CRM services on one port.

    Args:
        database: the business database (seed it first with ``seed``).
        payments_token / crm_key: required credentials, or ``None`` to accept any caller.
        flaky: answer 503 this many times to each new refund key before applying it (to show retries).
    """

    daemon_threads = True

    def __init__(self, database: Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 payments_token: str | None = None, crm_key: str | None = None, flaky: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.store = DemoStore(database)
        self.payments_token, self.crm_key, self.flaky = payments_token, crm_key, flaky
        self.attempts: Counter[str] = Counter()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        """Answer one request: ``(status, json body)``."""
        route = path.split("?", 1)[0].rstrip("/") or "/"
        if route in ("/health", "/crm/health") and method == "GET":
            return 200, _demo({"status": "ok"})
        if route.startswith("/crm/"):
            if not _allowed(headers.get("x-api-key"), self.crm_key):
                return 401, _demo({"error": "send the CRM key in X-API-Key (ORCHESTRA_CRM_API_KEY)"})
            return self._crm(method, route.removeprefix("/crm"), headers, body)
        if not _allowed(_bearer(headers.get("authorization")), self.payments_token):
            return 401, _demo({"error": "send the payments token as a bearer token (ORCHESTRA_PAYMENTS_TOKEN)"})
        return self._payments(method, route, headers, body)

    def _payments(self, method: str, route: str, headers: dict[str, str], body: Any) -> Answer:
        if method == "GET" and route.startswith("/refunds/"):
            found = self.store.get_refund(route.removeprefix("/refunds/"))
            return (200, found) if found else (404, _demo({"error": "no such refund"}))
        if route != "/refunds":
            return 404, _demo({"error": f"no route {method} {route}"})
        if method != "POST":
            return 405, _demo({"error": f"{method} is not allowed on /refunds; use POST"})
        key = headers.get("idempotency-key", "")
        if not key:
            return 400, _demo({"error": "the Idempotency-Key header is required"})
        if not isinstance(body, dict):
            return 422, _demo({"error": "send a JSON object such as {\"order_id\": \"A1\"}"})
        with self.store.lock:
            self.attempts[key] += 1
            if self.attempts[key] <= self.flaky and self.store.get_refund(key) is None:
                return 503, _demo({"error": "temporarily unavailable (demo --flaky)"})
        return self.store.refund(key, body)

    def _crm(self, method: str, route: str, headers: dict[str, str], body: Any) -> Answer:
        if method == "GET" and route.startswith("/contacts/"):
            found = self.store.contact(route.removeprefix("/contacts/"))
            return (200, found) if found else (404, _demo({"error": "no such contact"}))
        if method == "POST" and route == "/notes":
            key = headers.get("idempotency-key", "")
            if not key or not isinstance(body, dict):
                return 400, _demo({"error": "send a JSON object and an Idempotency-Key header"})
            return self.store.note(key, body)
        return 404, _demo({"error": f"no route {method} /crm{route}"})


def _bearer(value: str | None) -> str | None:
    return value.removeprefix("Bearer ").strip() if value and value.startswith("Bearer ") else None


def _allowed(given: str | None, required: str | None) -> bool:
    if not required:
        return True
    return given is not None and hmac.compare_digest(given.encode(), required.encode())
