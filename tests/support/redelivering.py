"""The Celery app, with kombu's sweep of unacked messages every second instead of every ~100 s.

A worker started with ``-A tests.support.redelivering`` and a short
``ORCHESTRA_VISIBILITY_TIMEOUT`` redelivers a message that has been running
past the timeout within a second or two, as a broker would after hours.
"""

from __future__ import annotations

from workers.app import app

app.conf.broker_transport_options = {**(app.conf.broker_transport_options or {}),
                                     "unacked_restore_interval": 1, "unacked_restore_throttle": 1}

__all__ = ["app"]
