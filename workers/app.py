"""The Celery app. Start a worker with ``celery -A workers.app worker`` or ``orchestra worker``."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready

from orchestra.keys import redis_url
from orchestra.settings import get_settings


def create_app() -> Celery:
    """Celery configured for at-least-once delivery: late acks, prefetch 1, requeue on worker loss."""
    settings = get_settings()
    url = redis_url()
    celery = Celery("orchestra", broker=url, backend=url, include=["orchestra.runtime", "orchestra.waits", "orchestra.notify"])
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


app = create_app()

from orchestra.schedules import register_beat  # noqa: E402 - the schedules tick and its beat entry

register_beat(app)


@worker_ready.connect
def _start_sweeper(**_: object) -> None:
    from orchestra.sweeper import start_sweeper

    start_sweeper()
