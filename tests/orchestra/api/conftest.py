"""Fixtures for the API tests: the app in-process (TestClient) and a key per role."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

_names = itertools.count()

SIMPLE = """
name: {name}
input_schema: {{type: object, required: [order_id], properties: {{order_id: {{type: string}}}}}}
steps:
  - id: first
    uses: task:tests.support.steps.count
    with: {{key: "api:{name}", value: "{{{{ input.order_id }}}}"}}
outputs: {{order: "{{{{ steps.first.output }}}}"}}
"""

APPROVAL = """
name: {name}
input_schema: {{type: object, required: [order_id], properties: {{order_id: {{type: string}}}}}}
steps:
  - id: approve
    uses: human
    with:
      title: "Refund {{{{ input.order_id }}}}?"
      assignees: [group:leads]
      form: {{type: object, required: [note], properties: {{note: {{type: string, minLength: 2}}}}}}
  - id: after
    uses: task:tests.support.steps.count
    with: {{key: "api:{name}", value: "{{{{ steps.approve.output }}}}"}}
"""

SIGNALLED = """
name: {name}
steps:
  - id: hold
    uses: signal
    with: {{name: go}}
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="session")
def app() -> Any:
    from orchestra.api import create_app

    return create_app()


@pytest.fixture
def api(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def key() -> Callable[..., dict[str, str]]:
    """``key(role, groups=[], expires_in=None)``: Authorization headers for a fresh key of that role."""
    from orchestra.auth import create_key

    def make(role: str, groups: list[str] | None = None, expires_in: timedelta | None = None,
             name: str | None = None) -> dict[str, str]:
        token = create_key(name or unique(role), role, groups or [], expires_in=expires_in)
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def admin(key: Callable[..., dict[str, str]]) -> dict[str, str]:
    return key("admin")


@pytest.fixture
def workflow(register: Callable[[str], Any]) -> Callable[[str], str]:
    """``workflow(TEMPLATE)``: register a fresh workflow from one of the templates above; returns its name."""

    def make(template: str = SIMPLE) -> str:
        name = unique("api-wf")
        register(template.format(name=name))
        return name

    return make


def assert_error_shape(body: Any) -> None:
    assert set(body) == {"errors"}, body
    assert body["errors"], body
    for item in body["errors"]:
        assert set(item) == {"loc", "msg", "type"}, item
        assert isinstance(item["loc"], list) and isinstance(item["msg"], str) and item["msg"]
