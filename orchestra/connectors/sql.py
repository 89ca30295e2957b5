"""The SQL connector: SQLAlchemy against a business database, read-only by default.

Values reach the database only as bound ``:name`` parameters; a query that is a
template (and could splice input into SQL) is refused. Read-only connectors
refuse every statement but ``SELECT``/``WITH ... SELECT`` and also run in a
read-only transaction where the database has one (PostgreSQL ``READ ONLY``,
SQLite ``PRAGMA query_only``). Results stop at ``row_limit`` rows; a statement
past ``timeout`` is cancelled.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import event

from orchestra.connectors import limits
from orchestra.connectors.base import Connector, ConnectorConfig, audit_call, block, parse_with, read_secret
from orchestra.errors import ConnectorError
from orchestra.redact import redact_text
from orchestra.settings import get_settings
from orchestra.templates import is_template

if TYPE_CHECKING:
    from orchestra.call import StepCall

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRINGS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_WRITES = re.compile(r"\b(insert|update|delete|merge|upsert|create|drop|alter|truncate|grant|revoke|attach|detach|"
                     r"pragma|vacuum)\b", re.I)
_FIRST_WORD = re.compile(r"^\s*\(?\s*([a-z]+)", re.I)


class SqlConfig(ConnectorConfig):
    """``kind: sql``."""

    kind: Literal["sql"]
    url: str | None = None  # SQLAlchemy URL without a password; `{var_dir}` is the settings' var directory
    url_env: str | None = None  # the whole URL from an environment variable (a secret); overrides url when set
    password_env: str | None = None  # the password, from an environment variable
    read_only: bool = True
    statements: list[str] | None = None  # allowed first keywords; default select (read-only) or select+dml
    row_limit: int = Field(default=1000, ge=1, le=1_000_000)

    def allowed_statements(self) -> set[str]:
        if self.statements is not None:
            return {s.lower() for s in self.statements}
        return {"select", "with"} if self.read_only else {"select", "with", "insert", "update", "delete"}


class SqlQuery(BaseModel):
    """A step's ``with`` for ``uses: sql:<name>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str
    params: dict[str, Any] = Field(default_factory=dict)


def statement_keyword(query: str) -> str:
    """The first keyword of ``query`` with comments stripped, lower-cased."""
    match = _FIRST_WORD.match(_COMMENTS.sub(" ", query))
    return match.group(1).lower() if match else ""


def is_single_statement(query: str) -> bool:
    body = _STRINGS.sub("''", _COMMENTS.sub(" ", query)).strip().rstrip(";")
    return ";" not in body


def writes_inside(query: str) -> bool:
    """Whether a ``WITH``/``SELECT`` hides a data-changing keyword outside string literals."""
    return bool(_WRITES.search(_STRINGS.sub("''", _COMMENTS.sub(" ", query))))


class SqlConnector(Connector):
    """Queries one business database."""

    config: SqlConfig

    def __init__(self, config: SqlConfig) -> None:
        super().__init__(config)
        self._engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self._build_engine()
        return self._engine

    def _build_engine(self) -> sa.Engine:
        what = f"connector '{self.name}'"
        from_env = self.config.url_env and read_secret(self.config.url_env, what=what, optional=bool(self.config.url))
        raw = from_env or self.config.url
        if not raw:
            raise ConnectorError(f"{what} has no database: set `url` or `url_env` in config/connectors.yaml",
                                 retryable=False)
        url = sa.make_url(raw.replace("{var_dir}", str(get_settings().var_dir.resolve())))
        if self.config.password_env:
            url = url.set(password=read_secret(self.config.password_env, what=what))
        if url.password:
            from orchestra.redact import register_secret

            register_secret(str(url.password))
        engine = sa.create_engine(url, pool_pre_ping=True)
        if engine.dialect.name == "sqlite" and self.config.read_only:
            @event.listens_for(engine, "connect")
            def _query_only(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA query_only = ON")
        return engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def parse_query(self, call: StepCall, params: dict[str, Any]) -> SqlQuery:
        return parse_with(call, SqlQuery, params, what=f"sql:{self.name}", fields="query and params")

    def check(self, call: StepCall, query: SqlQuery, raw_query: Any) -> None:
        """Refuse templated SQL, several statements, and statements off the allow-list."""
        details = {"connector": self.name, "statement": statement_keyword(query.query)}
        if isinstance(raw_query, str) and is_template(raw_query):
            raise block(call, "sql.bound_parameters", "the query is a template, which could splice input into SQL; "
                        "write :name placeholders and pass the values under `params`", **details)
        if not is_single_statement(query.query):
            raise block(call, "sql.single_statement", "the query holds more than one statement; send one per step",
                        **details)
        keyword = details["statement"]
        allowed = self.config.allowed_statements()
        if keyword not in allowed or (self.config.read_only and writes_inside(query.query)):
            fix = "set `read_only: false` on the connector" if self.config.read_only else "add it to `statements`"
            raise block(call, "sql.read_only" if self.config.read_only else "sql.statements",
                        f"'{keyword or '?'}' statements are not allowed on connector '{self.name}' "
                        f"(allowed: {', '.join(sorted(allowed))}); {fix}", **details)

    def call(self, call: StepCall, query: SqlQuery, raw_query: Any = None) -> dict[str, Any]:
        """Run ``query``; return ``{rows, rowcount, truncated}``."""
        self.check(call, query, raw_query)
        limits.take_request_token(self.config)
        started = time.monotonic()
        with limits.guarded(self.config, self.config.timeout + 5):
            out = self._execute(query)
        guardrail = {"decision": "allowed", "read_only": self.config.read_only,
                     "rules": ["workflow.connectors", "sql.bound_parameters", "sql.single_statement",
                               "sql.read_only" if self.config.read_only else "sql.statements"]}
        audit_call(call, "sql.called", {"connector": self.name, "statement": statement_keyword(query.query),
                                        "rowcount": out["rowcount"], "params": sorted(query.params), "guardrail": guardrail,
                                        "latency_ms": round((time.monotonic() - started) * 1000, 1)})
        return out

    def _execute(self, query: SqlQuery) -> dict[str, Any]:
        try:
            with self.engine.connect() as conn:
                if conn.dialect.name == "postgresql" and self.config.read_only:
                    conn = conn.execution_options(postgresql_readonly=True)
                with conn.begin():
                    self._prepare(conn)
                    result = conn.execute(sa.text(query.query), query.params)
                    if not result.returns_rows:
                        return {"rows": [], "rowcount": result.rowcount, "truncated": False}
                    fetched = result.mappings().fetchmany(self.config.row_limit + 1)
        except sa.exc.ArgumentError as exc:
            raise ConnectorError(f"sql:{self.name}: {exc}; check the query and its params", retryable=False) from None
        except sa.exc.StatementError as exc:
            raise _translate(self.name, exc) from None
        except sa.exc.SQLAlchemyError as exc:
            raise ConnectorError(f"sql:{self.name} failed: {redact_text(str(exc))}", retryable=True) from None
        rows = [{k: _json_value(v) for k, v in row.items()} for row in fetched[: self.config.row_limit]]
        return {"rows": rows, "rowcount": len(rows), "truncated": len(fetched) > self.config.row_limit}

    def _prepare(self, conn: sa.Connection) -> None:
        """Read-only transaction and statement timeout, where the database can enforce them."""
        dialect = conn.dialect.name
        timeout_ms = int(self.config.timeout * 1000)
        if dialect == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
        elif dialect == "sqlite":
            deadline = time.monotonic() + self.config.timeout
            raw = conn.connection.dbapi_connection
            if raw is not None:
                raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        elif dialect == "mysql":
            conn.exec_driver_sql(f"SET SESSION MAX_EXECUTION_TIME = {timeout_ms}")


def _translate(name: str, exc: sa.exc.StatementError) -> ConnectorError:
    text = redact_text(str(exc.orig) if exc.orig is not None else str(exc))
    lowered = text.lower()
    if "interrupted" in lowered or "statement timeout" in lowered or "canceling statement" in lowered:
        return ConnectorError(f"sql:{name}: the query ran past the connector's timeout; make it cheaper "
                              "or raise `timeout`", retryable=True)
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return ConnectorError(f"sql:{name}: the database refused a write in a read-only transaction ({text})",
                              retryable=False)
    if isinstance(exc, sa.exc.OperationalError):
        return ConnectorError(f"sql:{name} failed: {text}", retryable=True)
    if "bind parameter" in lowered or "value required" in lowered:
        return ConnectorError(f"sql:{name}: {text}; pass every :name placeholder under `params`", retryable=False)
    return ConnectorError(f"sql:{name} refused the query: {text}", retryable=False)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    return value
