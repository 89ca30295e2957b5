"""The broker: the Celery app, and every message Orchestra publishes.

``enqueue`` hands a recorded run to the workers, ``dispatch_run`` compiles what
remains of a run (``orchestra.compiler``, which is pure) and sends it,
``notify`` asks a worker to send a notification, and ``revoke_run`` withdraws a
cancelled run's queued messages. ``workers/app.py`` is only the entry point
Celery's command line loads.

Every canvas a run is sent as is frozen first, and its task ids kept in Redis
for a day (``keys.RUN_TASKS``), so a cancel can revoke the messages still queued.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from orchestra import keys
from orchestra.errors import NotEnqueued

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature

    from orchestra.spec import WorkflowSpec

log = logging.getLogger(__name__)

TASK_MODULES = ["orchestra.runtime", "orchestra.notify"]
NOTIFY_TASK = "orchestra.notify"
RUN_TASKS_TTL = 24 * 3600
# Publishing fails fast when Redis is away; the sweeper dispatches pending runs once it is back.
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

_app: Celery | None = None
_app_lock = threading.Lock()


def create_app() -> Celery:
    """Celery configured for at-least-once delivery: late acks, prefetch 1, requeue on worker loss."""
    from celery import Celery

    from orchestra.settings import get_settings

    settings = get_settings()
    url = keys.redis_url()
    celery = Celery("orchestra", broker=url, backend=url, include=TASK_MODULES)
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=False,
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        worker_hijack_root_logger=False,
        worker_max_tasks_per_child=None,
        worker_disable_rate_limits=True,  # connector limits are shared in Redis; Celery's per-worker ones go unused
        # A step running when the broker drops keeps running: its lease, not the broker, keeps it single.
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return celery


def celery_app() -> Celery:
    """The process's Celery app, created on first use so the library loads without a broker."""
    global _app
    if _app is None:
        with _app_lock:
            if _app is None:
                _app = create_app()
    return _app


def _unavailable(run_id: str, exc: BaseException) -> NotEnqueued:
    log.warning("run %s is recorded but could not be enqueued: %s", run_id, exc)
    return NotEnqueued(f"run {run_id} is recorded as pending but Redis is unavailable; it starts when Redis is back. "
                       "Sending the same request with the same idempotency key returns this run", run_id)


def _publish_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    return OSError, OperationalError, RedisError


def enqueue(run_id: str, spec: WorkflowSpec | None = None) -> None:
    """Hand a recorded run to the workers.

    A new run (``spec`` given) whose canvas is a plain chain of steps is sent
    compiled: the workers start on its first step straight away. Any other run
    goes as one small ``orchestra.advance`` message, and a worker compiles it
    from the database. Neither publish touches the result backend, so a Redis
    outage fails fast with ``NotEnqueued`` (the run stays as recorded) instead
    of hanging in Celery's result consumer.
    """
    from orchestra.compiler import ADVANCE_TASK, compile_run, is_plain_chain

    app = celery_app()
    try:
        canvas = compile_run(spec, run_id, {}, app=app) if spec is not None else None
        if canvas is not None and is_plain_chain(canvas):
            _send(run_id, canvas, retry=True, retry_policy=_PUBLISH_RETRY)
        else:
            result = app.send_task(ADVANCE_TASK, args=[run_id], ignore_result=True, retry=True,
                                   retry_policy=_PUBLISH_RETRY)
            _remember(run_id, [result.id])
    except _publish_errors() as exc:
        raise _unavailable(run_id, exc) from exc


def dispatch_run(run_id: str) -> None:
    """Compile what remains of ``run_id`` from the database and send it to the workers; an ended run is left be."""
    from sqlalchemy import select

    from orchestra import db
    from orchestra.compiler import compile_run
    from orchestra.models import NO_ITEM, TERMINAL_RUN, Run, StepRun
    from orchestra.catalog import get_workflow

    with db.read_session() as session:
        found = session.execute(select(Run.workflow, Run.version, Run.status).where(Run.id == run_id)).first()
        if found is None or found.status in TERMINAL_RUN:
            return
        rows = session.execute(
            select(StepRun.step_id, StepRun.status).where(StepRun.run_id == run_id, StepRun.item == NO_ITEM)
        ).all()
    spec = get_workflow(found.workflow, found.version)
    _send(run_id, compile_run(spec, run_id, {sid: status for sid, status in rows}, app=celery_app()))


def _send(run_id: str, canvas: Signature, **options: Any) -> None:
    """Freeze ``canvas``, keep its task ids for ``revoke_run``, then publish it."""
    canvas.freeze()
    _remember(run_id, list(_task_ids(canvas)))
    canvas.apply_async(**options)


def _task_ids(canvas: Any) -> Any:
    tasks = getattr(canvas, "tasks", None)
    if tasks:
        for task in tasks:
            yield from _task_ids(task)
    body = canvas.get("kwargs", {}).get("body") if hasattr(canvas, "get") else None
    if body is not None:
        yield from _task_ids(body)
    task_id = canvas.options.get("task_id") if hasattr(canvas, "options") else None
    if task_id and not tasks:
        yield task_id


def _remember(run_id: str, task_ids: list[str]) -> None:
    if not task_ids:
        return
    pipe = keys.client().pipeline(transaction=False)
    pipe.sadd(keys.RUN_TASKS + run_id, *task_ids)
    pipe.expire(keys.RUN_TASKS + run_id, RUN_TASKS_TTL)
    pipe.execute()


def revoke_run(run_id: str) -> int:
    """Withdraw the run's queued messages (a running step is stopped by its heartbeat); returns how many."""
    r = keys.client()
    ids = sorted(r.smembers(keys.RUN_TASKS + run_id))
    if ids:
        celery_app().control.revoke(ids, terminate=False)
    r.delete(keys.RUN_TASKS + run_id)
    return len(ids)


def notify(task_id: str, reason: str) -> None:
    """Ask a worker to send the notifications of human task ``task_id``."""
    celery_app().send_task(NOTIFY_TASK, args=[task_id, reason], ignore_result=True)


def redeclare_queues() -> None:
    """Re-create the broker's queue bindings, which a Redis that lost its data no longer routes to."""
    app = celery_app()
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in app.amqp.queues.values():
            queue(channel).declare()
