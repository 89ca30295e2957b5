"""Notifications to a real local SMTP server and a local webhook server, with signed single-use links."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from orchestra.decisions import decide
from orchestra.errors import AuthError, TaskExpired
from orchestra.notify import verify_link
from orchestra.runs import submit_run
from tests.orchestra.waitkit import approval_spec, audit_of, open_task_of, unique
from tests.support.harness import wait_for_run, wait_until


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append({"to": envelope.rcpt_tos, "body": envelope.content.decode(errors="replace")})
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def webhook() -> Iterator[tuple[list[dict[str, Any]], int]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/fail":
                self.send_response(500)
            else:
                received.append(body)
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield received, server.server_address[1]
    finally:
        server.shutdown()


def _config(tmp_path: Path, hook_port: int, smtp_port: int) -> Path:
    (tmp_path / "notifications.yaml").write_text(f"""
link_ttl: 600
channels:
  - {{name: slack, kind: webhook, url: "http://127.0.0.1:{hook_port}/hook", attempts: 2}}
  - {{name: broken, kind: webhook, url: "http://127.0.0.1:{hook_port}/fail", attempts: 2}}
  - {{name: unset, kind: webhook, url_env: ORCHESTRA_TEST_NO_SUCH_WEBHOOK}}
  - name: mail
    kind: email
    host: 127.0.0.1
    port: {smtp_port}
    from: orchestra@test
    to: [fallback@example.com]
    recipients: {{"group:leads": [leads@example.com]}}
""")
    return tmp_path


def _link(text: str) -> str:
    return re.search(r"link=([A-Za-z0-9_.\-]+)", text).group(1)  # type: ignore[union-attr]


def test_requests_and_escalations_reach_webhook_and_email_with_single_use_links(
        isolated_workers, register, smtp, webhook, tmp_path):
    inbox, smtp_port = smtp
    posts, hook_port = webhook
    isolated_workers(env={"ORCHESTRA_CONFIG_DIR": str(_config(tmp_path, hook_port, smtp_port))})
    name = unique("notify")
    register(approval_spec(name, assignees="[group:leads]", extra="      escalate: [{after: 1s, to: [group:managers]}]"))
    run, _ = submit_run(name, {"what": "the laptop"})
    task = open_task_of(run.id)

    wait_until(lambda: len(posts) >= 2 and len(inbox.messages) >= 2, timeout=20, what="two webhooks and two emails")

    assert [p["reason"] for p in posts] == ["requested", "escalated"]
    assert posts[0]["text"].startswith("[Orchestra] Approve the laptop?")
    assert posts[0]["task_id"] == task["id"]
    assert inbox.messages[0]["to"] == ["leads@example.com"]
    assert inbox.messages[1]["to"] == ["fallback@example.com"]
    assert "Subject: [Orchestra] Approve the laptop?" in inbox.messages[0]["body"]
    first_link, escalated_link = _link(posts[0]["text"]), _link(posts[1]["text"])
    with pytest.raises(TaskExpired, match="earlier version"):
        verify_link(first_link)
    assert verify_link(escalated_link) == task["id"]
    with pytest.raises(TaskExpired, match="already used"):
        verify_link(escalated_link)
    with pytest.raises(AuthError, match="signature"):
        verify_link(escalated_link[:-4] + "AAAA")

    decide(task["id"], "approve", "mia", ["managers"])
    assert wait_for_run(run.id, ("succeeded", "failed"))["status"] == "succeeded"
    events, verified = audit_of(run.id)
    assert verified
    failed = [e.payload for e in events if e.type == "notification.failed"]
    assert {f["channel"] for f in failed} == {"broken"} and "500" in failed[0]["error"]
    assert sum(e.type == "notification.sent" for e in events) == 4
