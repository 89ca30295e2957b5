"""Where Redis and database outages become Orchestra's own ``Unavailable``, at the library's edge.

The library's entry points (submit, read, cancel and retry runs; decide tasks;
deliver signals; recover waits) are wrapped in ``translated``, so a caller of the
library sees ``orchestra.errors.Unavailable`` naming what is down and what to
check, never a redis-py or SQLAlchemy exception.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from kombu.exceptions import OperationalError as BrokerDown
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError

from orchestra.errors import Unavailable

F = TypeVar("F", bound=Callable[..., Any])


def translate(exc: BaseException) -> Unavailable | None:
    """The ``Unavailable`` that stands for ``exc``, or None if ``exc`` is not an outage."""
    if isinstance(exc, (RedisError, BrokerDown)):
        return Unavailable(f"Redis is unavailable ({type(exc).__name__}: {exc}); check that it runs and that "
                           "ORCHESTRA_REDIS_URL points at it, then try again")
    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return Unavailable(f"the results database is unavailable ({type(exc.orig).__name__}); check that it runs "
                           "and that ORCHESTRA_DATABASE_URL points at it, then try again")
    return None


def translated(func: F) -> F:
    """``func`` with Redis and database outages raised as ``Unavailable``."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (RedisError, BrokerDown, DBAPIError) as exc:
            mapped = translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    return cast(F, wrapper)
