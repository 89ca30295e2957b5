"""Rate and concurrency limits shared by every worker through Redis.

A token bucket (``rate_limit: 20/s``) and a semaphore (``max_concurrency: 5``)
live in Redis and change only inside Lua scripts, so a check and its update are
one atomic step on every machine. Both use Redis' own clock (``TIME``), so
workers with skewed clocks still agree. A call that is held back raises
``RateLimited`` with the seconds to wait; the runtime reschedules the step with
that countdown instead of holding a worker slot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from orchestra import keys
from orchestra.connectors.base import ConnectorConfig
from orchestra.errors import ConnectorError, RateLimited

# KEYS[1] bucket hash; ARGV rate (tokens/s), capacity. Returns ms to wait (0: a token was taken).
_TAKE_TOKEN = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return wait
"""

# KEYS[1] holders zset (member: holder, score: lease end ms); ARGV limit, holder, lease ms.
# Returns 0 when a slot was taken, else ms until the earliest lease ends.
_ACQUIRE_SLOT = """
local limit = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 1000)
  return 0
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(first[2]) - now)
"""

# Poll for a free slot this often at most: a slot is usually freed long before its lease ends.
SLOT_POLL_SECONDS = 0.5

_scripts: dict[tuple[int, str], Any] = {}


def _script(source: str) -> Any:
    client = keys.client()
    key = (id(client), source)
    if key not in _scripts:
        _scripts[key] = client.register_script(source)
    return _scripts[key]


def take_token(connector: str, rate: float, burst: int | None = None) -> None:
    """Take one call's token from ``connector``'s bucket or raise ``RateLimited``."""
    capacity = burst or max(1, int(rate))
    try:
        wait_ms = int(_script(_TAKE_TOKEN)(keys=[keys.RATE + connector], args=[rate, capacity]))
    except redis.RedisError as exc:
        raise ConnectorError(f"cannot reach Redis to check the rate limit of '{connector}': {exc}",
                             retryable=True) from exc
    if wait_ms > 0:
        raise RateLimited(f"connector '{connector}' is at its rate limit of {rate:g}/s; trying again in "
                          f"{wait_ms / 1000:.3f}s", retry_after=wait_ms / 1000)


@contextmanager
def concurrency_slot(connector: str, limit: int, lease_seconds: float) -> Iterator[None]:
    """Hold one of ``limit`` slots for ``connector`` while the block runs, or raise ``RateLimited``.

    The lease bounds how long a killed worker's slot stays taken.
    """
    holder = uuid.uuid4().hex
    key = keys.SEMAPHORE + connector
    try:
        wait_ms = int(_script(_ACQUIRE_SLOT)(keys=[key], args=[limit, holder, int(lease_seconds * 1000)]))
    except redis.RedisError as exc:
        raise ConnectorError(f"cannot reach Redis to take a slot of '{connector}': {exc}", retryable=True) from exc
    if wait_ms > 0:
        raise RateLimited(f"connector '{connector}' already has {limit} calls in flight (max_concurrency); "
                          "trying again shortly", retry_after=min(wait_ms / 1000, SLOT_POLL_SECONDS))
    try:
        yield
    finally:
        try:
            keys.client().zrem(key, holder)
        except redis.RedisError:
            pass  # the lease ends the slot on its own


@contextmanager
def guarded(config: ConnectorConfig, lease_seconds: float) -> Iterator[None]:
    """Apply ``config``'s concurrency cap around the block (rate tokens are taken per request)."""
    if config.max_concurrency:
        with concurrency_slot(config.name, config.max_concurrency, lease_seconds):
            yield
    else:
        yield


def take_request_token(config: ConnectorConfig) -> None:
    """Take a rate token for one request, if ``config`` has a rate limit."""
    if config.rate_limit:
        take_token(config.name, config.rate_limit, config.burst)
