"""Property-based tests of the API against its own OpenAPI: no 5xx, no response that breaks the schema."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error

from orchestra.api import create_app

EXAMPLES_PER_ENDPOINT = int(os.environ.get("ORCHESTRA_SCHEMATHESIS_EXAMPLES", "30"))
# The same examples every run keep CI repeatable; ORCHESTRA_SCHEMATHESIS_RANDOM=1 explores new ones.
DERANDOMIZE = os.environ.get("ORCHESTRA_SCHEMATHESIS_RANDOM") != "1"


# Built at import: create_app() reads no database or Redis, only the (default) body limit.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


@pytest.fixture
def admin_token(key: Any) -> str:
    return str(key("admin")["Authorization"])


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_ENDPOINT, deadline=None, derandomize=DERANDOMIZE, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_every_endpoint_answers_within_its_schema(case: Any, admin_token: str) -> None:
    case.call_and_validate(headers={"Authorization": admin_token}, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance])
