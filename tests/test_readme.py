"""Every shell and Python block of README.md that a user is told to run, run in order against a real stack.

The stack is ``orchestra up`` in a temporary project directory: its own ``var/``
(SQLite, ``admin.token``, the demo order book), its own ports, and a database
of the suite's Redis server of its own, so no message of the suite's workers
reaches it. The blocks run there as written, from that directory, with these
substitutions:

- the README's ports (8000 for the API, 8100 for the demo systems) become the
  stack's, and ``/tmp/`` the test's temporary directory;
- ``RUN_ID`` is the run id the latest ``orchestra submit`` printed, and
  ``TASK_ID`` the id that the latest ``orchestra inbox`` showed for that run's
  open task.

An HTML comment just before a fence changes how its block is run:

- ``<!-- readme-test: skip (why) -->``: not run; the reason is required.
- ``<!-- readme-test: needs-parked-run -->``: a run of ``refund-request`` that waits
  for a person is submitted first, and ``RUN_ID`` and ``TASK_ID`` name it.

A shell block runs one command at a time, each of which must exit 0; a Python
block runs as a script with the project's interpreter and must exit 0.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.harness import ROOT, wait_until

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
SHELL, PYTHON = {"sh", "bash", "shell"}, {"python", "py"}
MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<kind>[a-z-]+)\s*(?:\((?P<why>[^)]*)\))?\s*-->$")
KINDS = {"skip", "needs-parked-run"}
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
ID = re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?\b")
# The README's defaults, and what the stack under test uses instead (filled in by the fixture).
API_PORT, DEMO_PORT = 8000, 8100


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str | None = None
    why: str | None = None

    @property
    def runnable(self) -> bool:
        return (self.lang in SHELL or self.lang in PYTHON) and self.marker != "skip"

    def commands(self) -> list[str]:
        """The shell block's commands: continued lines joined, blank and comment-only lines left out."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with the ``readme-test`` marker on the line before its fence, if any."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"README.md:{i + 1}: the fence is never closed"
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        if before.startswith("<!--") and "readme-test" in before:
            assert marker, f"README.md:{i}: cannot read the marker {before!r}; write <!-- readme-test: skip (why) -->"
            assert marker["kind"] in KINDS, f"README.md:{i}: unknown readme-test marker {marker['kind']!r} ({KINDS})"
        blocks.append(Block(line=i + 1, lang=opening["lang"], text="\n".join(lines[i + 1:end]),
                            marker=marker["kind"] if marker else None, why=marker["why"] if marker else None))
        i = end + 1
    return blocks


def test_every_readme_block_a_user_runs_is_run_or_skipped_with_a_reason() -> None:
    blocks = readme_blocks(README.read_text())
    for block in blocks:
        where = f"README.md:{block.line}"
        if block.marker == "skip":
            assert block.why and block.why.strip(), f"{where}: say why the block is skipped: skip (why)"
        if block.marker is not None:
            assert block.lang in SHELL | PYTHON, f"{where}: a readme-test marker on a ```{block.lang} block does nothing"
    runnable = [b for b in blocks if b.runnable]
    assert {b.lang for b in runnable} >= {"sh", "python"}, "the walkthrough and the client example are run"


@dataclass
class Stack:
    project: Path
    env: dict[str, str]
    api: str
    demo: str
    log: Path

    def token(self) -> str:
        return (self.project / "var" / "admin.token").read_text().strip()

    def open_tasks(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.api}/v1/tasks", params={"status": "open"},
                             headers={"Authorization": f"Bearer {self.token()}"}, timeout=10)
        response.raise_for_status()
        return list(response.json()["tasks"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _procfile() -> str:
    """The real Procfile, on the test's ports, without the processes no block uses (beat and Flower)."""
    kept = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        name = line.split(":", 1)[0].strip()
        if name in ("beat", "flower") or not line.strip():
            continue
        kept.append(line + (" --port {demo_port}" if name == "demo" else ""))
    assert {line.split(":", 1)[0] for line in kept} == {"web", "worker", "demo"}, kept
    return "\n".join(kept) + "\n"


@pytest.fixture(scope="module")
def readme_stack(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    project = tmp_path_factory.mktemp("readme-project")
    (project / ".venv").symlink_to(ROOT / ".venv")
    (project / "config").symlink_to(ROOT / "config")
    api_port, demo_port = _free_port(), _free_port()
    (project / "Procfile").write_text(_procfile().format(demo_port=demo_port))
    redis_url = re.sub(r"/\d*$", "", stack.redis_url.rstrip("/")) + "/7"  # a database of its own on the suite's server
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    env.update({"ORCHESTRA_REDIS_URL": redis_url, "ORCHESTRA_API_PORT": str(api_port),
                "ORCHESTRA_PAYMENTS_URL": f"http://127.0.0.1:{demo_port}",
                "ORCHESTRA_CRM_URL": f"http://127.0.0.1:{demo_port}/crm", "COLUMNS": "80",
                "PYTHONPATH": str(ROOT)})  # this checkout's code, whichever the venv was installed from
    log = project / "up.log"
    up = subprocess.Popen([str(project / ".venv" / "bin" / "orchestra"), "up"], cwd=project, env=env,
                          stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    ready = Stack(project, env, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{demo_port}", log)
    try:
        wait_until(lambda: up.poll() is not None or (_answers(f"{ready.api}/readyz") and _answers(f"{ready.demo}/health")
                                                     and " ready." in log.read_text(errors="replace")),
                   timeout=90, what="the API, the demo systems and a worker of `orchestra up`")
        assert up.poll() is None, f"orchestra up exited with {up.returncode}:\n{log.read_text()[-3000:]}"
        yield ready
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)  # Ctrl-C, as the README says
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(timeout=10)


@dataclass
class Walk:
    """What the blocks so far have printed, for the placeholders of the next ones."""

    stack: Stack
    tmp: Path
    run_id: str | None = None
    inbox: str | None = None
    transcript: list[str] = field(default_factory=list)

    def substitute(self, text: str, where: str) -> str:
        text = text.replace(f"127.0.0.1:{API_PORT}", self.stack.api.removeprefix("http://"))
        text = text.replace(f"127.0.0.1:{DEMO_PORT}", self.stack.demo.removeprefix("http://"))
        text = text.replace("/tmp/", f"{self.tmp}/")
        if "RUN_ID" in text:
            assert self.run_id, f"{where}: RUN_ID, but no `orchestra submit` before it printed a run id"
            text = text.replace("RUN_ID", self.run_id)
        if "TASK_ID" in text:
            text = text.replace("TASK_ID", self.task_id(where))
        return text

    def task_id(self, where: str) -> str:
        """The id the latest inbox showed for the open task of RUN_ID, as it showed it."""
        assert self.inbox is not None, f"{where}: TASK_ID, but no `orchestra inbox` ran before it"
        assert self.run_id, f"{where}: TASK_ID, but no run was submitted before it"
        ours = [t["id"] for t in self.stack.open_tasks() if t["run_id"] == self.run_id]
        assert ours, f"{where}: run {self.run_id} has no open task"
        # Listings show an id's last 8 characters (a UUIDv7's first 8 are its minute); a full id matches too.
        shown = [token for token in ID.findall(self.inbox)  # a full id, or the short form the table shows
                 if any(t == token or (len(token) == 8 and token in (t[:8], t[-8:])) for t in ours)]
        assert shown, f"{where}: the inbox did not show the task of run {self.run_id} ({ours}):\n{self.inbox}"
        return shown[0]

    def run(self, args: list[str], where: str, command: str) -> str:
        started = time.monotonic()
        done = subprocess.run(args, cwd=self.stack.project, env=self.stack.env, capture_output=True, text=True,
                              timeout=120)
        output = done.stdout + done.stderr
        self.transcript.append(f"$ {command}  ({time.monotonic() - started:.1f}s, exit {done.returncode})\n{output}")
        assert done.returncode == 0, f"{where}: `{command}` exited {done.returncode}:\n{output}"
        return done.stdout

    def park_a_run(self, where: str) -> None:
        headers = {"Authorization": f"Bearer {self.stack.token()}"}
        body = {"workflow": "refund-request", "input": {"order_id": "A2", "message": "broken, refund me"}}
        run = httpx.post(f"{self.stack.api}/v1/runs", json=body, headers=headers, timeout=10)
        assert run.status_code == 202, f"{where}: {run.text}"
        self.run_id = run.json()["id"]
        wait_until(lambda: any(t["run_id"] == self.run_id for t in self.stack.open_tasks()), timeout=60,
                   what=f"run {self.run_id} to park for {where}")
        self.inbox = "\n".join(t["id"] for t in self.stack.open_tasks())


def test_every_readme_block_runs_as_written(readme_stack: Stack, tmp_path: Path) -> None:
    walk = Walk(readme_stack, tmp_path)
    blocks = [b for b in readme_blocks(README.read_text()) if b.runnable]
    try:
        for block in blocks:
            where = f"README.md:{block.line}"
            if block.marker == "needs-parked-run":
                walk.park_a_run(where)
            if block.lang in PYTHON:
                script = tmp_path / f"readme_{block.line}.py"
                script.write_text(walk.substitute(block.text, where))
                walk.run([str(readme_stack.project / ".venv" / "bin" / "python"), str(script)], where, str(script))
                continue
            for command in block.commands():
                line = walk.substitute(command, where)
                out = walk.run(["bash", "-c", "set -o pipefail; " + line], where, line)
                if re.search(r"\borchestra submit\b", line):
                    found = ID.search(out)
                    assert found, f"{where}: `{line}` printed no run id:\n{out}"
                    walk.run_id = found.group(0)
                if re.search(r"\borchestra inbox\b", line):
                    walk.inbox = out
    finally:
        print("\n".join(walk.transcript))  # shown when the test fails, or with -s
