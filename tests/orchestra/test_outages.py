"""Redis and database outages reach a library caller as ``orchestra.errors.Unavailable``, naming what is down."""

from __future__ import annotations

import pytest
import redis

from orchestra import db, keys
from orchestra.decisions import decide
from orchestra.errors import Unavailable
from orchestra.ids import new_id
from orchestra.runs import get_run, submit_run
from orchestra.settings import get_settings
from tests.orchestra.waitkit import APPROVAL, open_task_of, unique


def test_a_decision_with_redis_down_raises_unavailable_naming_redis(workers, register, monkeypatch):
    name = unique("outage")
    register(APPROVAL.format(name=name, on_reject="continue", assignees="[alice]", extra=""))
    run, _ = submit_run(name, {"what": "x"})
    task = open_task_of(run.id)
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    monkeypatch.setattr(keys, "client", lambda: dead)

    with pytest.raises(Unavailable) as caught:
        decide(task["id"], "approve", "alice", input={"note": "ok"})

    assert caught.value.message.startswith("Redis is unavailable (ConnectionError")
    assert "ORCHESTRA_REDIS_URL" in caught.value.message
    assert isinstance(caught.value.__cause__, redis.RedisError)


def test_a_library_call_with_the_database_down_raises_unavailable_naming_the_database(monkeypatch, tmp_path):
    monkeypatch.setenv("ORCHESTRA_DATABASE_URL", f"sqlite:///{tmp_path}/no/such/dir/orchestra.db")
    get_settings.cache_clear()
    db.reset_engine()
    try:
        with pytest.raises(Unavailable) as caught:
            get_run(new_id())
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        db.reset_engine()

    assert caught.value.message.startswith("the results database is unavailable (OperationalError)")
    assert "ORCHESTRA_DATABASE_URL" in caught.value.message
