"""Fixtures for the connector tests: loopback servers, a connector config, and step calls on real runs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from orchestra import db, keys, transitions
from orchestra.audit import list_events, verify_chain
from orchestra.connectors.registry import parse_connectors, registry
from orchestra.ids import new_id
from orchestra.models import Run, StepRun
from orchestra.spec import load_spec
from orchestra.steps.base import StepCall
from tests.orchestra.connectors.servers import ChatCompletions, Payments


@pytest.fixture
def payments() -> Iterator[Payments]:
    server = Payments().start()
    yield server
    server.stop()


@pytest.fixture
def chat() -> Iterator[ChatCompletions]:
    server = ChatCompletions().start()
    yield server
    server.stop()


@pytest.fixture
def connectors() -> Iterator[Callable[[str], None]]:
    """``connectors(yaml_text)`` makes this process use those connectors (fresh Redis limits and budgets)."""
    client = keys.client()
    for prefix in (keys.RATE, keys.SEMAPHORE, keys.BUDGET):
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)

    def use(text: str) -> None:
        registry.configure(parse_connectors(yaml.safe_load(text)))

    yield use
    registry.configure(None)


def create_run(workflow: str) -> str:
    run_id = new_id()
    with db.write_session() as session:
        session.add(Run(id=run_id, workflow=workflow, version=1, status="running", input={}, submitted_by="tester"))
    return run_id


@pytest.fixture
def make_call() -> Iterator[Callable[..., StepCall]]:
    """``make_call(spec, step_id, params=None, item=-1, run_id=None)``: a StepCall on a real run row."""

    def make(spec: str | dict[str, Any], step_id: str, params: dict[str, Any] | None = None, *, item: int = -1,
             run_id: str | None = None, attempt: int = 1, context: dict[str, Any] | None = None) -> StepCall:
        workflow = load_spec(spec)
        step = workflow.by_id[step_id]
        run_id = run_id or create_run(workflow.name)
        with db.write_session() as session:
            row = session.scalars(select(StepRun).where(StepRun.run_id == run_id, StepRun.step_id == step_id,
                                                        StepRun.item == item)).first()
            if row is None:
                row = StepRun(id=new_id(), run_id=run_id, step_id=step_id, item=item, status="running",
                              attempts=attempt)
                session.add(row)
            row_id = row.id
        call = StepCall(run_id=run_id, step_id=step_id, item=item, attempt=attempt,
                        spec=workflow, step=step, params=step.with_ if params is None else params,
                        context=context or {"input": {}, "steps": {}}, actor="tester", execution_id=row_id)
        _made.append(call)
        return call

    yield make
    _made.clear()


_made: list[StepCall] = []  # the calls make_call handed out: their journals are written as the runtime would


def _write_journals(run_id: str) -> None:
    """Write what the calls of ``run_id`` audited, as the runtime does with a step's outcome."""
    for call in _made:
        if call.run_id == run_id:
            for entry in call.journal:
                transitions.audit(run_id, entry["type"], actor=entry["actor"], step_id=entry["step_id"],
                                  payload=entry["payload"])
            call.journal.clear()


def audit_of(run_id: str) -> list[dict[str, Any]]:
    """The run's audit events as ``{type, payload}``, after checking the chain."""
    _write_journals(run_id)
    with db.read_session() as session:
        events = list_events(session, run_id)
        assert verify_chain(events).verified
        return [{"type": e.type, "step_id": e.step_id, "payload": e.payload} for e in events]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
