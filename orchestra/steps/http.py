"""``uses: http:<connector>``: one request to a system of record (see ``orchestra.connectors.http``)."""

from __future__ import annotations

from typing import Any

from orchestra.connectors.registry import connector_for
from orchestra.connectors.http import HttpConnector
from orchestra.steps.base import StepCall, StepKind


class HttpKind(StepKind):
    name = "http"

    def execute(self, call: StepCall) -> Any:
        connector = connector_for(call, call.step.target, HttpConnector)
        assert isinstance(connector, HttpConnector)
        return connector.call(call, connector.parse_request(call, call.params))

