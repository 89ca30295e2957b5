"""The step runtime's statements, run on the database driver's own cursor.

Every step costs two short transactions (claim, then complete). Through
SQLAlchemy's execution machinery each statement cost several times what the
database itself spends on it, which made Orchestra half as fast as bare Celery
on no-op steps. Here the runtime's handful of statements run on the DBAPI
connection, with JSON and UTC datetimes converted exactly as the models' column
types convert them, so SQLAlchemy reads back what this module writes and the
other way round. Everything outside ``orchestra.runtime`` uses SQLAlchemy.

The SQL is written once with ``:name`` parameters and runs on SQLite (as named
parameters) and PostgreSQL (rewritten to ``%(name)s``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, TypeVar, cast

from sqlalchemy import JSON, Engine, Table

from orchestra import db
from orchestra.models import AuditEvent, HumanTask, Run, SignalWait, StepRun, UTCDateTime

TABLES = {t.name: t for t in (cast(Table, m.__table__) for m in (Run, StepRun, AuditEvent, HumanTask, SignalWait))}
JSON_COLUMNS = frozenset(c.name for t in TABLES.values() for c in t.c if isinstance(c.type, JSON))
TIME_COLUMNS = frozenset(c.name for t in TABLES.values() for c in t.c if isinstance(c.type, UTCDateTime))
assert not JSON_COLUMNS & TIME_COLUMNS, "a column name means JSON in one table and a time in another"
TYPED_COLUMNS = JSON_COLUMNS | TIME_COLUMNS  # the columns converted on the way in and out



class Record(dict[str, Any]):
    """A fetched row: ``row.status`` or ``row["status"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Stale(Exception):
    """A guarded write found its row changed since the snapshot it was planned on was read."""


Write = tuple[str, Any, bool]  # (sql, params, guarded); params is a list of rows for an insert


class Tx:
    """One transaction on ``runs``, ``step_runs`` and ``audit_events``: fetch rows and change them.

    A deferred ``Tx`` reads from a snapshot and holds its writes back, for
    ``optimistic`` to apply in a short write transaction afterwards; its reads
    do not see its own writes.
    """

    def __init__(self, cursor: Any, dialect: Dialect, deferred: bool = False) -> None:
        self._cursor = cursor
        self.dialect = dialect
        self.writes: list[Write] | None = [] if deferred else None

    # -- statements -------------------------------------------------------------------------------------------
    def one(self, sql: str, **params: Any) -> Record | None:
        rows = self.all(sql, **params)
        return rows[0] if rows else None

    def all(self, sql: str, **params: Any) -> list[Record]:
        cursor = self._execute(sql, params)
        names = [d[0] for d in cursor.description]
        typed = [name for name in names if name in TYPED_COLUMNS]
        records = [Record(zip(names, row)) for row in cursor.fetchall()]
        for record in records:
            for name in typed:
                record[name] = self._decode(name, record[name])
        return records

    def update(self, table: str, row_id: str, guard: dict[str, Any] | None = None, **values: Any) -> int:
        """``UPDATE table SET <values> WHERE id = :row_id [AND <guard>]``; returns the rows changed.

        ``guard`` holds the columns' values as the caller read them. Applied by
        ``optimistic``, a guarded update that changes no row means the row moved
        on meanwhile, and the whole plan is read and made again. A deferred
        ``Tx`` returns 1.
        """
        guard = guard if self.writes is not None else None  # under the lock the rows cannot have moved on
        sql = _update_sql(table, tuple(values), _guard_shape(guard))
        params = {**self._encode_all(values), "row_id_": row_id,
                  **{f"was_{k}": v for k, v in self._encode_all(guard or {}).items() if v is not None}}
        if self.writes is not None:
            self.writes.append((sql, params, guard is not None))
            return 1
        return int(self._execute(sql, params).rowcount)

    def execute(self, sql: str, **params: Any) -> int:
        """A statement over several rows (``UPDATE ... WHERE run_id = ...``), unguarded; returns the rows changed.

        A deferred ``Tx`` holds it back with its other writes and returns 0.
        """
        encoded = self._encode_all(params)
        if self.writes is not None:
            self.writes.append((sql, encoded, False))
            return 0
        return int(self._execute(sql, encoded).rowcount)

    def insert(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        rows = [self._encode_all(r) for r in rows]
        if not rows:
            return
        sql = _insert_sql(table, tuple(rows[0]))
        if self.writes is not None:
            self.writes.append((sql, rows, False))
        else:
            self._cursor.executemany(self._sql(sql), rows)

    def apply(self, writes: list[Write]) -> None:
        """Carry out a deferred ``Tx``'s writes, guarded ones first; ``Stale`` if a guard does not hold."""
        for sql, params, guarded in sorted(writes, key=lambda w: not w[2]):
            if guarded:
                if self._execute(sql, params).rowcount != 1:
                    raise Stale(sql)
            elif isinstance(params, list):
                self._cursor.executemany(self._sql(sql), params)
            else:
                self._execute(sql, params)

    def lock(self, sql: str, **params: Any) -> Record | None:
        """``one`` with the row locked for this transaction (as the dialect locks a row).

        A deferred ``Tx`` only reads it: its guarded writes stand in for the lock.
        """
        return self.one(sql if self.writes is not None else self.dialect.locking(sql), **params)

    # -- conversion -------------------------------------------------------------------------------------------
    def _execute(self, sql: str, params: dict[str, Any]) -> Any:
        self._cursor.execute(self._sql(sql), params)
        return self._cursor

    def _sql(self, sql: str) -> str:
        return self.dialect.sql(sql)

    def _encode_all(self, values: dict[str, Any]) -> dict[str, Any]:
        encoded = dict(values)
        for name in values.keys() & TYPED_COLUMNS:
            encoded[name] = self._encode(name, values[name])
        return encoded

    def _encode(self, name: str, value: Any) -> Any:
        if name in JSON_COLUMNS:
            return json.dumps(value)  # as SQLAlchemy's JSON type: None is stored as JSON null
        if name in TIME_COLUMNS and value is not None:
            if value.tzinfo is None:
                raise ValueError(f"naive datetime given for {name}; use orchestra.models.utcnow()")
            return self.dialect.encode_time(value.astimezone(timezone.utc))
        return value

    def _decode(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if name in JSON_COLUMNS:
            return self.dialect.decode_json(value)
        if name in TIME_COLUMNS:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else value
            return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
        return value


def _guard_shape(guard: dict[str, Any] | None) -> tuple[tuple[str, bool], ...]:
    """Each guarded column, and whether it must be NULL (which ``=`` cannot test)."""
    return tuple((name, value is None) for name, value in (guard or {}).items())


@lru_cache(maxsize=256)
def _update_sql(table: str, columns: tuple[str, ...], guard: tuple[tuple[str, bool], ...] = ()) -> str:
    _check(table, columns + tuple(name for name, _ in guard))
    where = "".join(f" AND {name} IS NULL" if null else f" AND {name} = :was_{name}" for name, null in guard)
    return f"UPDATE {table} SET {', '.join(f'{c} = :{c}' for c in columns)} WHERE id = :row_id_{where}"


@lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    _check(table, columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(f':{c}' for c in columns)})"


def _check(table: str, columns: tuple[str, ...]) -> None:
    unknown = set(columns) - set(TABLES[table].c.keys())
    if unknown:
        raise KeyError(f"{table} has no column {', '.join(sorted(unknown))}")


@lru_cache(maxsize=256)
def _pyformat(sql: str) -> str:
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


_kept = threading.local()  # on SQLite, each thread's (engine, pid, connection), kept across transactions
_inherited: list[Any] = []
T = TypeVar("T")


class Dialect:
    """What the runtime's statements do differently on one database; ``SQLite`` and ``PostgreSQL`` are the two."""

    name = ""

    def sql(self, text: str) -> str:
        """``text``, written with ``:name`` parameters, in the driver's parameter style."""
        return text

    def locking(self, sql: str) -> str:
        """``sql`` (a one-row select) so that it locks the row for the transaction."""
        return sql

    def encode_time(self, value: datetime) -> Any:
        """A UTC datetime as the column stores it."""
        return value

    def decode_json(self, value: Any) -> Any:
        """A JSON column's value as the driver gave it, parsed."""
        return value

    @contextmanager
    def connection(self, engine: Engine) -> Iterator[Any]:
        """A DBAPI connection for one transaction, from the pool; on an error it is rolled back and given up."""
        connection = engine.raw_connection()
        with _giving_up(engine, connection):
            yield connection
        connection.close()  # back to the pool

    def begin(self, cursor: Any) -> None:
        """Start a write transaction on ``cursor``."""

    def plan_and_write(self, engine: Engine, plan: Callable[[Tx], T]) -> T:
        """Run ``plan`` in one write transaction, its row locks keeping out only the writers of the same run."""
        with transaction() as tx:
            return plan(tx)


class PostgreSQL(Dialect):
    """Row locks with ``FOR UPDATE``; pooled connections, which ``pool_pre_ping`` checks; pyformat parameters."""

    name = "postgresql"

    def sql(self, text: str) -> str:
        return _pyformat(text)

    def locking(self, sql: str) -> str:
        return f"{sql} FOR UPDATE"


class SQLite(Dialect):
    """One writer at a time: writers queue on a file lock, plans are made on a snapshot and written after."""

    name = "sqlite"

    def encode_time(self, value: datetime) -> Any:
        # As SQLAlchemy's SQLite DateTime stores it: "2026-11-25 06:02:32.091000", which sorts as time does.
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")

    def decode_json(self, value: Any) -> Any:
        # SQLite gives JSON text, or a number where the column's numeric affinity converted the text
        # (as SQLAlchemy allows for).
        return json.loads(value) if isinstance(value, str) else value

    def begin(self, cursor: Any) -> None:
        cursor.execute("BEGIN IMMEDIATE")  # the writers' file lock is held: take SQLite's at once

    @contextmanager
    def connection(self, engine: Engine) -> Iterator[Any]:
        """The thread's own connection, kept open across transactions.

        A step costs two short transactions, and a pool checkout, its reset and its
        checkin cost about as much as one of them. A SQLite file does not go away
        under a connection the way a server can, so it is kept. A transaction opened
        inside another on the same thread takes a pooled one.
        """
        if getattr(_kept, "busy", False):
            with super().connection(engine) as pooled:
                yield pooled
            return
        kept = getattr(_kept, "connection", None)
        if kept is None or kept[0] is not engine:  # first use, or the engine was rebuilt (fork, new settings)
            if kept is not None and kept[1] != os.getpid():
                _inherited.append(kept)  # never close a parent's SQLite connection in a child: it drops its locks
            kept = _kept.connection = (engine, os.getpid(), engine.raw_connection())
        connection, _kept.busy = kept[2], True
        try:
            with _giving_up(engine, connection, forget=True):
                yield connection
        finally:
            _kept.busy = False

    def plan_and_write(self, engine: Engine, plan: Callable[[Tx], T]) -> T:
        """Make ``plan`` on a snapshot and write it, up to ``OPTIMISTIC_ATTEMPTS`` times; then whole under the lock."""
        for _ in range(OPTIMISTIC_ATTEMPTS):
            applied, result = self._read_and_write(engine, plan)
            if applied:
                return result
        return super().plan_and_write(engine, plan)

    def _read_and_write(self, engine: Engine, plan: Callable[[Tx], T]) -> tuple[bool, T]:
        """Make ``plan`` on a snapshot and apply its writes; False if a guard found its row moved on.

        The writes go first into the snapshot's own transaction: its first write
        takes the write lock, which SQLite refuses at once if another connection
        holds it or has committed since the snapshot was read. Only then do the
        guarded writes go into a write transaction of their own. So a claim usually
        costs one transaction, not two, and its writes find the pages its reads brought
        in (SQLite drops its page cache at the start of every transaction that follows
        another process's commit).
        """
        with self.connection(engine) as connection:
            cursor = connection.cursor()
            cursor.execute("BEGIN DEFERRED")  # one consistent snapshot of the WAL for every read
            reader = Tx(cursor, self, deferred=True)
            result = plan(reader)
            if not reader.writes:
                connection.rollback()
                return True, result
            with db.writer_turn():
                try:
                    return self._apply(connection, cursor, reader.writes), result
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode not in _REFUSED:
                        raise
                    connection.rollback()  # wait for the lock in a write transaction of its own
                    self.begin(cursor)
                    return self._apply(connection, cursor, reader.writes), result

    def _apply(self, connection: Any, cursor: Any, writes: list[Write]) -> bool:
        """Apply ``writes`` in the open transaction and commit; False, rolled back, if a guard did not hold."""
        try:
            Tx(cursor, self).apply(writes)
        except Stale:
            connection.rollback()
            return False
        connection.commit()
        return True


DIALECTS: dict[str, Dialect] = {"sqlite": SQLite(), "postgresql": PostgreSQL()}


def dialect_of(engine: Engine) -> Dialect:
    """The runtime's dialect for ``engine``'s database."""
    return DIALECTS[engine.dialect.name]


@contextmanager
def _giving_up(engine: Engine, connection: Any, forget: bool = False) -> Iterator[None]:
    """On an error, roll ``connection`` back and close it, so the next transaction starts clean."""
    try:
        yield
    except BaseException:
        if forget:
            _kept.connection = None
        try:
            connection.rollback()
        except engine.dialect.loaded_dbapi.Error:
            connection.invalidate()  # a broken connection must not go back to the pool
        connection.close()
        raise


@contextmanager
def transaction() -> Iterator[Tx]:
    """One write transaction: committed on success, rolled back on error.

    On SQLite it waits its turn on the writers' file lock, then starts with
    ``BEGIN IMMEDIATE`` (see ``orchestra.db``); on PostgreSQL ``Tx.lock`` takes
    the run row with ``FOR UPDATE``.
    """
    engine = db.engine()
    dialect = dialect_of(engine)
    with db.writer_turn(), dialect.connection(engine) as connection:
        cursor = connection.cursor()
        dialect.begin(cursor)
        yield Tx(cursor, dialect)
        connection.commit()


OPTIMISTIC_ATTEMPTS = 3
# SQLite refuses a snapshot's first write at once, without waiting, when another connection holds the write lock
# or has committed since the snapshot was read.
_REFUSED = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_BUSY_SNAPSHOT)


def optimistic(plan: Callable[[Tx], T], blind: Callable[[Tx], T] | None = None) -> T:
    """Run ``plan`` (reads, then writes) holding the write lock only for its writes.

    On SQLite, where every writer queues for one lock, ``plan`` reads from a
    snapshot and guards each update that depends on what it read; its writes are
    then applied. If another writer moved a guarded row on meanwhile, the plan is
    read and made again; after ``OPTIMISTIC_ATTEMPTS`` such clashes it runs whole
    under the lock. That keeps the step runtime's reads, template rendering,
    hashing and encoding out of the queue. On PostgreSQL a run's row lock keeps out
    only the writers of that run, so ``plan`` runs under it in one transaction,
    which saves the snapshot's round trips (``Dialect.plan_and_write``).

    ``blind`` is the same plan made from what the caller already knows, without
    reading (its ``Tx`` has no cursor): it is tried first, and when one of its
    guards does not hold, ``plan`` reads afresh as above.
    """
    engine = db.engine()
    dialect = dialect_of(engine)
    if blind is not None:
        planner = Tx(None, dialect, deferred=True)
        result = blind(planner)
        if _applied(planner):
            return result
    return dialect.plan_and_write(engine, plan)


def _applied(deferred: Tx) -> bool:
    """Apply a deferred ``Tx``'s writes in one write transaction; False if a guard found its row moved on."""
    assert deferred.writes is not None
    if not deferred.writes:
        return True
    try:
        with transaction() as tx:
            tx.apply(deferred.writes)
    except Stale:
        return False
    return True
