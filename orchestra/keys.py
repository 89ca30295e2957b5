"""Redis: the one client factory and every key prefix Orchestra writes.

Celery's own keys (``celery``, ``celery-task-meta-*``, ``unacked*``) belong to
Celery; everything Orchestra writes starts with ``orchestra:``.
"""

from __future__ import annotations

import os
from pathlib import Path

import redis

from orchestra.errors import ConfigError
from orchestra.settings import get_settings

PREFIX = "orchestra:"
WAIT = PREFIX + "wait:"  # hash per parked step: wait:<task or signal id>
DEADLINES = PREFIX + "deadlines"  # sorted set of wait ids by deadline (epoch seconds)
CLAIM = PREFIX + "claim:"  # decision claims, one per human task
RATE = PREFIX + "rate:"  # connector token buckets
SEMAPHORE = PREFIX + "sem:"  # connector concurrency slots
BUDGET = PREFIX + "budget:"  # model token budgets
LINK = PREFIX + "link:"  # single-use notification links
SESSION = PREFIX + "session:"  # web UI sessions: session id -> API key id
RUN_TASKS = PREFIX + "run-tasks:"  # set per run: the Celery task ids of its sent canvases, for a cancel to revoke
RECONCILE = PREFIX + "reconcile"  # held while one sweeper restores waits Redis is missing

_clients: dict[tuple[int, str], redis.Redis] = {}


def embedded_url_file(var_dir: Path | None = None) -> Path:
    return (var_dir or get_settings().var_dir) / "redis" / "url"


def redis_url() -> str:
    """``ORCHESTRA_REDIS_URL``, or the URL of the embedded server ``orchestra up`` started."""
    settings = get_settings()
    if settings.redis_url:
        return settings.redis_url
    marker = embedded_url_file()
    if marker.exists():
        return marker.read_text().strip()
    raise ConfigError(
        "no Redis to talk to: set ORCHESTRA_REDIS_URL, or start the stack with `orchestra up` (or `make run`), "
        "which starts an embedded Redis"
    )


def client() -> redis.Redis:
    """A Redis client for this process (rebuilt after a fork)."""
    url = redis_url()
    key = (os.getpid(), url)
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
    return found
