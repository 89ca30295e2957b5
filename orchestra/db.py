"""Engine and sessions for the results database.

SQLite runs in WAL mode with a busy timeout so that several worker processes can
write to it; its write transactions start with ``BEGIN IMMEDIATE`` so that two
writers never both read a run's audit head and then collide. On PostgreSQL the
same serialisation comes from ``SELECT ... FOR UPDATE`` on the run row.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from orchestra.settings import get_settings

_engine: Engine | None = None
_engine_pid: int | None = None
_factory: sessionmaker[Session] | None = None
_read_factory: sessionmaker[Session] | None = None
_lock_path: str | None = None


def _sqlite_lock_path(eng: Engine) -> str | None:
    database = eng.url.database
    if eng.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return f"{database}.writer-lock"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with Orchestra's SQLite tuning applied."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=5)
        _tune_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def engine() -> Engine:
    """The process's engine, rebuilt after a fork so pooled connections are never shared."""
    global _engine, _engine_pid, _factory, _read_factory, _lock_path
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = make_engine(get_settings().resolved_database_url())
        _engine_pid = os.getpid()
        _lock_path = _sqlite_lock_path(_engine)
        _factory = sessionmaker(_engine, expire_on_commit=False)
        reader = _engine.execution_options(sqlite_begin="DEFERRED")
        _read_factory = sessionmaker(reader, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    """Forget the engine, e.g. after settings changed in tests."""
    global _engine, _engine_pid
    if _engine is not None:
        _engine.dispose()
    _engine = None
    _engine_pid = None


@contextmanager
def write_session() -> Iterator[Session]:
    """One write transaction: committed on success, rolled back on error."""
    engine()
    assert _factory is not None
    with writer_turn(), _factory() as session, session.begin():
        yield session


_lock_files = threading.local()  # each thread's open handle on the writers' lock file: flock is per handle


@contextmanager
def writer_turn() -> Iterator[None]:
    """On SQLite, queue writers on a file lock.

    SQLite's busy handler polls with sleeps of up to 100 ms, so contended writers
    idle long after the lock is free. A kernel file lock wakes the next writer
    the moment the previous one commits. PostgreSQL needs none of this.
    """
    if _lock_path is None:
        yield
        return
    key = (os.getpid(), _lock_path)  # a forked child, or a new database, opens its own
    if getattr(_lock_files, "key", None) != key:
        _lock_files.key, _lock_files.handle = key, open(_lock_path, "a")
    handle = _lock_files.handle
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def read_session() -> Iterator[Session]:
    """A read-only session that takes no write lock on SQLite."""
    engine()
    assert _read_factory is not None
    with _read_factory() as session:
        yield session


def is_sqlite() -> bool:
    return engine().dialect.name == "sqlite"
