"""Bare Celery, configured like Orchestra's app (acks late, prefetch 1), for the baselines in bench/.

``app`` is Celery as it comes with a result backend: every task's result is
stored in Redis. ``lean`` ignores results, as Orchestra does for every step
that is not a chord member; its chains end in ``lean.done``, which counts them.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

url = os.environ["ORCHESTRA_REDIS_URL"]
LEAN_DONE = "bench:lean-done"


def _app(name: str, ignore_result: bool) -> Celery:
    celery = Celery(name, broker=url, backend=url)
    celery.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
                       task_serializer="json", result_serializer="json", accept_content=["json"],
                       task_ignore_result=ignore_result)
    return celery


app = _app("bare", ignore_result=False)
lean = _app("lean", ignore_result=True)
_redis = redis.Redis.from_url(url)


@app.task(name="bare.noop")
def noop(*_: object) -> None:
    return None


@lean.task(name="lean.noop")
def lean_noop(*_: object) -> None:
    return None


@lean.task(name="lean.done")
def lean_done(*_: object) -> None:
    _redis.incr(LEAN_DONE)
