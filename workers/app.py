"""The entry point Celery's command line loads: ``celery -A workers.app worker|beat|flower``.

The app itself, and every publish, live in ``orchestra.broker``.
"""

from __future__ import annotations

from celery.signals import worker_ready

from orchestra.broker import celery_app
from orchestra.schedules import register_beat

app = celery_app()
register_beat(app)


@worker_ready.connect
def _start_sweeper(**_: object) -> None:
    from orchestra.sweeper import start_sweeper

    start_sweeper()
