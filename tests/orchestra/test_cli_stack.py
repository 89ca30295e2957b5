"""`orchestra up` (what `make run` starts) refuses to start a second stack, saying which one runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.harness import ROOT, wait_until


def up(env: dict[str, str], procfile: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "orchestra.cli", "up", "--procfile", str(procfile)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_a_second_up_names_the_running_stacks_pid_and_port_and_starts_nothing(stack, tmp_path):
    env = {**stack.env, "ORCHESTRA_VAR_DIR": str(tmp_path / "var"), "ORCHESTRA_API_PORT": "18731"}
    first_marker, second_marker = tmp_path / "first", tmp_path / "second"
    sleeper = f"{sys.executable} -c \"import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(120)\""
    (tmp_path / "Procfile.first").write_text(f"sleeper: {sleeper} {first_marker}\n")
    (tmp_path / "Procfile.second").write_text(f"sleeper: {sleeper} {second_marker}\n")
    first = up(env, tmp_path / "Procfile.first")
    try:
        wait_until(first_marker.exists, timeout=60, what="the first stack's process to start")
        second = subprocess.run([sys.executable, "-m", "orchestra.cli", "up", "--procfile",
                                 str(tmp_path / "Procfile.second")], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=60)
        said = " ".join(second.stderr.split())
        assert second.returncode == 1, second.stderr
        assert f"a stack is already running from {tmp_path / 'var'} (pid {first.pid}, API on 127.0.0.1:18731" in said
        assert "Traceback" not in second.stderr and "Nothing was started" in said
        assert not second_marker.exists()
        assert json.loads((tmp_path / "var" / "stack.lock").read_text())["pid"] == first.pid
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.wait(timeout=60)
    # Once the first stack has stopped its claim is gone, with no stale file to clean up.
    third = up(env, tmp_path / "Procfile.second")
    try:
        wait_until(second_marker.exists, timeout=60, what="a stack to start after the first stopped")
    finally:
        os.killpg(third.pid, signal.SIGINT)
        third.wait(timeout=60)


def test_up_refuses_when_the_api_port_is_taken_naming_the_port_and_its_pid(stack, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**stack.env, "ORCHESTRA_VAR_DIR": str(tmp_path / "var"), "ORCHESTRA_API_PORT": str(port)}
        env.pop("ORCHESTRA_REDIS_URL")  # so that starting anything would start an embedded Redis under var/redis
        (tmp_path / "Procfile").write_text("web: orchestra api\n")
        result = subprocess.run([sys.executable, "-m", "orchestra.cli", "up", "--procfile", str(tmp_path / "Procfile")],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    said = " ".join(result.stderr.split())
    assert result.returncode == 1, result.stderr
    assert f"port {port} (web: the API and UI) is in use by pid {os.getpid()}" in said, said
    assert "Traceback" not in result.stderr and not (tmp_path / "var" / "redis").exists()
