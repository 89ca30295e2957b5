"""The SQL connector against a business database: SQLite, and PostgreSQL when configured."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestra.connectors.registry import get_connector
from orchestra.connectors.sql import SqlConnector, SqlQuery
from orchestra.errors import ConnectorError, GuardrailBlocked
from orchestra.steps.kinds import get_kind
from tests.orchestra.connectors.conftest import audit_of

ORDERS = [("A1", 120.5, "open"), ("A2", 40, "open"), ("A3", 75, "closed"), ("A4", 10, "open"), ("A5", 99, "open")]


@pytest.fixture(params=["sqlite", "postgresql"])
def business_db(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """``(url, table)`` of a database holding five orders."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'business.db'}"
    else:
        url = os.environ.get("ORCHESTRA_TEST_DATABASE_URL", "")
        if not url.startswith("postgresql"):
            pytest.skip("set ORCHESTRA_TEST_DATABASE_URL to a PostgreSQL database to run this")
    table = f"orders_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id VARCHAR(10) PRIMARY KEY, amount NUMERIC(10, 2), "
                             "status VARCHAR(10))"))
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (:id, :amount, :status)"),
                     [{"id": i, "amount": a, "status": s} for i, a, s in ORDERS])
    yield url, table
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {table}"))
    engine.dispose()


def use(connectors, url: str, **options: object) -> None:  # type: ignore[no-untyped-def]
    extra = "".join(f"\n    {k}: {v}" for k, v in options.items())
    connectors(f"""
connectors:
  orders:
    kind: sql
    url: "{url}"
    timeout: 2s{extra}
""")


def spec(query: str, params: str = "{}") -> str:
    return f"""
name: lookup
connectors: [orders]
steps:
  - id: lookup
    uses: sql:orders
    with:
      query: "{query}"
      params: {params}
"""


def run_query(make_call, query: str, params: str = "{}"):  # type: ignore[no-untyped-def]
    call = make_call(spec(query, params), "lookup")
    return call, get_kind("sql").execute(call)


def test_select_binds_named_parameters_and_returns_rows(business_db, connectors, make_call):
    url, table = business_db
    use(connectors, url)

    call, output = run_query(make_call, f"select id, amount from {table} where id = :id", "{id: A1}")

    assert output == {"rows": [{"id": "A1", "amount": 120.5}], "rowcount": 1, "truncated": False}
    called = [e for e in audit_of(call.run_id) if e["type"] == "sql.called"]
    assert called[0]["payload"]["statement"] == "select" and called[0]["payload"]["params"] == ["id"]


def test_injection_through_a_parameter_is_just_a_value(business_db, connectors, make_call):
    url, table = business_db
    use(connectors, url)

    _, output = run_query(make_call, f"select id from {table} where id = :id", "{id: \"A1' OR '1'='1\"}")

    assert output["rows"] == []


def test_a_templated_query_is_refused(business_db, connectors, make_call):
    url, table = business_db
    use(connectors, url)

    with pytest.raises(GuardrailBlocked) as caught:
        run_query(make_call, f"select id from {table} where id = '{{{{ input.id }}}}'")

    assert caught.value.rule == "sql.bound_parameters"


@pytest.mark.parametrize(("statement", "keyword"), [
    ("delete from {table}", "delete"),
    ("update {table} set status = 'x'", "update"),
    ("with gone as (delete from {table} returning id) select id from gone", "with"),
    ("drop table {table}", "drop"),
])
def test_writes_on_a_read_only_connector_are_blocked_and_audited(business_db, connectors, make_call, statement,
                                                                  keyword):
    url, table = business_db
    use(connectors, url)
    call = make_call(spec(statement.format(table=table)), "lookup")

    with pytest.raises(GuardrailBlocked) as caught:
        get_kind("sql").execute(call)

    assert caught.value.rule == "sql.read_only"
    events = audit_of(call.run_id)
    assert [e["type"] for e in events] == ["guardrail.blocked"]  # and no sql.called: the query never ran
    payload = events[0]["payload"]
    assert (events[0]["step_id"], payload["rule"], payload["connector"], payload["statement"]) == \
        ("lookup", "sql.read_only", "orders", keyword)
    assert "set `read_only: false`" in payload["reason"]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"select count(*) from {table} where status != 'x'")).scalar() == 5
    engine.dispose()


def test_two_statements_in_one_query_are_blocked(business_db, connectors, make_call):
    url, table = business_db
    use(connectors, url)

    with pytest.raises(GuardrailBlocked) as caught:
        run_query(make_call, f"select 1; delete from {table}")

    assert caught.value.rule == "sql.single_statement"


def test_the_database_itself_refuses_writes_on_a_read_only_connector(business_db, connectors):
    url, table = business_db
    use(connectors, url)
    connector = get_connector("orders")
    assert isinstance(connector, SqlConnector)

    with pytest.raises(ConnectorError, match="read-only"):
        connector._execute(SqlQuery(query=f"delete from {table}"))


def test_writes_run_when_the_connector_allows_them(business_db, connectors, make_call):
    url, table = business_db
    use(connectors, url, read_only="false")

    _, output = run_query(make_call, f"update {table} set status = :status where id = :id", "{id: A2, status: paid}")

    assert output["rowcount"] == 1


def test_rows_stop_at_the_row_limit(business_db, connectors, make_call):
    url, table = business_db
    use(connectors, url, row_limit=3)

    _, output = run_query(make_call, f"select id from {table} order by id")

    assert [r["id"] for r in output["rows"]] == ["A1", "A2", "A3"]
    assert output["truncated"] is True


def test_a_query_past_the_timeout_is_cancelled(business_db, connectors, make_call):
    url, _ = business_db
    use(connectors, url, timeout="300ms")
    endless = ("with recursive c(x) as (select 1 union all select x + 1 from c where x < 1000000000) "
               "select count(*) from c")

    with pytest.raises(ConnectorError, match="ran past the connector's timeout") as caught:
        run_query(make_call, endless)

    assert caught.value.retryable


def test_a_missing_parameter_is_named(business_db, connectors, make_call):
    url, table = business_db
    use(connectors, url)

    with pytest.raises(ConnectorError, match="params") as caught:
        run_query(make_call, f"select id from {table} where id = :id")

    assert not caught.value.retryable
