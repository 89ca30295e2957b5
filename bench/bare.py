"""Bare Celery, configured like Orchestra's app (acks late, prefetch 1), for the baselines in bench/."""

from __future__ import annotations

import os

from celery import Celery

url = os.environ["ORCHESTRA_REDIS_URL"]
app = Celery("bare", broker=url, backend=url)
app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
                task_serializer="json", result_serializer="json", accept_content=["json"])


@app.task(name="bare.noop")
def noop(*_: object) -> None:
    return None
