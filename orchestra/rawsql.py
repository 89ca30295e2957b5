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
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import JSON, Table

from orchestra import db
from orchestra.models import AuditEvent, Run, StepRun, UTCDateTime

TABLES = {t.name: t for t in (cast(Table, Run.__table__), cast(Table, StepRun.__table__), cast(Table, AuditEvent.__table__))}
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


class Tx:
    """One write transaction: fetch and change rows of ``runs``, ``step_runs`` and ``audit_events``."""

    def __init__(self, cursor: Any, sqlite: bool) -> None:
        self._cursor = cursor
        self._sqlite = sqlite

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

    def update(self, table: str, row_id: str, **values: Any) -> int:
        """``UPDATE table SET <values> WHERE id = :row_id``; returns the number of rows changed."""
        sql = _update_sql(table, tuple(values))
        return int(self._execute(sql, {**self._encode_all(values), "row_id_": row_id}).rowcount)

    def insert(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        rows = [self._encode_all(r) for r in rows]
        if rows:
            self._cursor.executemany(self._sql(_insert_sql(table, tuple(rows[0]))), rows)

    def lock(self, sql: str, **params: Any) -> Record | None:
        """``one`` with the row locked for this transaction (SQLite's ``BEGIN IMMEDIATE`` already locks it all)."""
        return self.one(sql if self._sqlite else f"{sql} FOR UPDATE", **params)

    # -- conversion -------------------------------------------------------------------------------------------
    def _execute(self, sql: str, params: dict[str, Any]) -> Any:
        self._cursor.execute(self._sql(sql), params)
        return self._cursor

    def _sql(self, sql: str) -> str:
        return sql if self._sqlite else _pyformat(sql)

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
            value = value.astimezone(timezone.utc)
            # As SQLAlchemy's SQLite DateTime stores it: "2026-11-25 06:02:32.091000", which sorts as time does.
            return value.replace(tzinfo=None).isoformat(" ", "microseconds") if self._sqlite else value
        return value

    def _decode(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if name in JSON_COLUMNS:
            # SQLite gives JSON text, or a number where the column's numeric affinity converted the text
            # (as SQLAlchemy allows for); the PostgreSQL drivers parse JSON themselves.
            return json.loads(value) if self._sqlite and isinstance(value, str) else value
        if name in TIME_COLUMNS:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else value
            return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
        return value


@lru_cache(maxsize=256)
def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    _check(table, columns)
    return f"UPDATE {table} SET {', '.join(f'{c} = :{c}' for c in columns)} WHERE id = :row_id_"


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


@contextmanager
def transaction() -> Iterator[Tx]:
    """One write transaction on a pooled DBAPI connection: committed on success, rolled back on error.

    On SQLite it waits its turn on the writers' file lock, then starts with
    ``BEGIN IMMEDIATE`` (see ``orchestra.db``); on PostgreSQL ``Tx.lock`` takes
    the run row with ``FOR UPDATE``.
    """
    engine = db.engine()
    sqlite = engine.dialect.name == "sqlite"
    with db.writer_turn():
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            if sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            yield Tx(cursor, sqlite)
            connection.commit()
        except BaseException:
            try:
                connection.rollback()
            except engine.dialect.loaded_dbapi.Error:
                connection.invalidate()  # a broken connection must not go back to the pool
            raise
        finally:
            connection.close()
