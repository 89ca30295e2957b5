"""Prometheus metrics, computed from the results database on each scrape.

Workers are many processes on many machines; the database already records every
run, step and audit event, so reading it on scrape gives one consistent view
without a push gateway or multiprocess collectors.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, inspect, select

from orchestra import db
from orchestra.models import AuditEvent, Run, StepRun
from orchestra.workflows import get_workflow

log = logging.getLogger(__name__)

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
CONNECTOR_KINDS = {"http", "sql", "llm", "agent"}


class OrchestraCollector(Collector):
    """Runs by workflow and status, step durations, waiting tasks, escalations, connector errors and retries."""

    def collect(self) -> Iterator[Metric]:
        with db.read_session() as session:
            yield _runs(session)
            yield _step_durations(session)
            yield from _waiting_tasks(session)
            yield from _event_counters(session)


def _runs(session: Any) -> Metric:
    gauge = GaugeMetricFamily("orchestra_runs", "Runs by workflow and status.", labels=["workflow", "status"])
    for workflow, status, count in session.execute(
            select(Run.workflow, Run.status, func.count()).group_by(Run.workflow, Run.status)):
        gauge.add_metric([workflow, status], count)
    return gauge


def _step_durations(session: Any) -> Metric:
    """The histogram is counted by the database, so a scrape costs one aggregate query however long the history."""
    seconds = _seconds_between(session, StepRun.started_at, StepRun.finished_at)
    buckets = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in BUCKETS]
    rows = session.execute(
        select(Run.workflow, func.count(), func.coalesce(func.sum(seconds), 0.0), *buckets)
        .join(Run, Run.id == StepRun.run_id)
        .where(StepRun.started_at.is_not(None), StepRun.finished_at.is_not(None))
        .group_by(Run.workflow))
    histogram = HistogramMetricFamily("orchestra_step_duration_seconds", "Step execution time, start to end.",
                                      labels=["workflow"])
    for workflow, count, total, *cumulative in rows:
        points = [(str(bound), int(n or 0)) for bound, n in zip(BUCKETS, cumulative)] + [("+Inf", int(count))]
        histogram.add_metric([workflow], points, max(0.0, float(total)))
    return histogram


def _seconds_between(session: Any, start: Any, end: Any) -> Any:
    """``end - start`` in seconds, as a SQL expression for the session's database."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def _waiting_tasks(session: Any) -> Iterator[Metric]:
    gauge = GaugeMetricFamily("orchestra_waiting_tasks", "Open human tasks by escalation level.", labels=["level"])
    if "human_tasks" in inspect(session.get_bind()).get_table_names():
        from orchestra.models import HumanTask

        for level, count in session.execute(
                select(HumanTask.level, func.count()).where(HumanTask.status == "open").group_by(HumanTask.level)):
            gauge.add_metric([str(level)], count)
    yield gauge


def _event_counters(session: Any) -> Iterator[Metric]:
    by_type = CounterMetricFamily("orchestra_audit_events", "Audit events by type.", labels=["type"])
    escalations = CounterMetricFamily("orchestra_escalations", "Human task escalations.")
    retries = CounterMetricFamily("orchestra_step_retries", "Step retries by workflow.", labels=["workflow"])
    errors = CounterMetricFamily("orchestra_connector_errors", "Failed connector calls (retried or final).",
                                 labels=["connector"])
    escalated = 0
    for type_, count in session.execute(select(AuditEvent.type, func.count()).group_by(AuditEvent.type)):
        by_type.add_metric([type_], count)
        escalated += count if "escalat" in type_ else 0
    escalations.add_metric([], escalated)
    retried: dict[str, int] = defaultdict(int)
    failed_calls: dict[str, int] = defaultdict(int)
    for workflow, version, step_id, type_, count in session.execute(
            select(Run.workflow, Run.version, AuditEvent.step_id, AuditEvent.type, func.count())
            .join(Run, Run.id == AuditEvent.run_id)
            .where(AuditEvent.type.in_(["step.retrying", "step.failed"]))
            .group_by(Run.workflow, Run.version, AuditEvent.step_id, AuditEvent.type)):
        if type_ == "step.retrying":
            retried[workflow] += count
        connector = _connector_of(workflow, version, step_id)
        if connector:
            failed_calls[connector] += count
    for workflow, count in retried.items():
        retries.add_metric([workflow], count)
    for connector, count in failed_calls.items():
        errors.add_metric([connector], count)
    yield from (by_type, escalations, retries, errors)


def _connector_of(workflow: str, version: int, step_id: str | None) -> str | None:
    try:
        step = get_workflow(workflow, version).by_id.get(step_id or "")
    except Exception:  # a metric must never fail a scrape
        log.debug("no spec for %s v%s", workflow, version, exc_info=True)
        return None
    return step.target if step is not None and step.kind in CONNECTOR_KINDS else None


def render() -> bytes:
    """The metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OrchestraCollector())
    return generate_latest(registry)
