"""``uses: sql:<connector>``: one bound-parameter query (see ``orchestra.connectors.sql``)."""

from __future__ import annotations

from typing import Any

from orchestra.connectors.registry import connector_for
from orchestra.connectors.sql import SqlConnector
from orchestra.steps.base import StepCall, StepKind


class SqlKind(StepKind):
    name = "sql"

    def execute(self, call: StepCall) -> Any:
        connector = connector_for(call, call.step.target, SqlConnector)
        assert isinstance(connector, SqlConnector)
        query = connector.parse_query(call, call.params)
        return connector.call(call, query, raw_query=call.step.with_.get("query"))

