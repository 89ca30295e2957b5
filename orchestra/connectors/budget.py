"""Model token budgets, per run and per workflow (per UTC day), kept in Redis.

Before a model call the connector reserves its estimate (prompt plus the most
the model may answer) against both budgets in one Lua script, so concurrent
steps cannot overspend together. After the call the reservation is settled to
the tokens actually used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import redis
from pydantic import BaseModel, ConfigDict, Field

from orchestra import keys
from orchestra.errors import BudgetExceeded, ConnectorError

RUN_TTL_SECONDS = 30 * 86400
WORKFLOW_TTL_SECONDS = 2 * 86400

# KEYS run, workflow; ARGV run limit, workflow limit (0: none), amount, run ttl, workflow ttl.
# Returns {0, 0} when reserved, else {1 (run) | 2 (workflow), tokens already used}.
_RESERVE = """
local amount = tonumber(ARGV[3])
for i = 1, 2 do
  local limit = tonumber(ARGV[i])
  if limit > 0 then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used + amount > limit then return {i, used} end
  end
end
for i = 1, 2 do
  redis.call('INCRBY', KEYS[i], amount)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3 + i]))
end
return {0, 0}
"""


class Budget(BaseModel):
    """A model connector's token budgets; 0 or unset means no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_run: int = Field(default=0, ge=0)
    per_workflow: int = Field(default=0, ge=0)  # per workflow per UTC day


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one call, settled with ``settle``."""

    run_key: str
    workflow_key: str
    amount: int


def _keys(connector: str, run_id: str, workflow: str) -> tuple[str, str]:
    day = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    return (f"{keys.BUDGET}run:{run_id}:{connector}", f"{keys.BUDGET}workflow:{workflow}:{connector}:{day}")


def reserve(budget: Budget, *, connector: str, run_id: str, workflow: str, amount: int) -> Reservation:
    """Hold ``amount`` tokens against both budgets, or raise ``BudgetExceeded`` naming the one that refused."""
    run_key, workflow_key = _keys(connector, run_id, workflow)
    try:
        script = keys.client().register_script(_RESERVE)
        refused, used = script(keys=[run_key, workflow_key],
                               args=[budget.per_run, budget.per_workflow, amount, RUN_TTL_SECONDS, WORKFLOW_TTL_SECONDS])
    except redis.RedisError as exc:
        raise ConnectorError(f"cannot reach Redis to check the token budget of '{connector}': {exc}",
                             retryable=True) from exc
    if refused:
        scope = "run" if int(refused) == 1 else "workflow"
        limit = budget.per_run if scope == "run" else budget.per_workflow
        where = f"run {run_id}" if scope == "run" else f"workflow '{workflow}' today"
        raise BudgetExceeded(f"the model call needs up to {amount} tokens but {where} has used {used} of its "
                             f"{limit}-token budget on connector '{connector}'; raise `budget.per_{scope}` or approve "
                             "the overspend", scope=scope, limit=limit, used=int(used), needed=amount)
    return Reservation(run_key, workflow_key, amount)


def settle(reservation: Reservation, used: int) -> None:
    """Replace the reservation with the tokens actually ``used``."""
    delta = used - reservation.amount
    if delta:
        try:
            pipe = keys.client().pipeline()
            pipe.incrby(reservation.run_key, delta)
            pipe.incrby(reservation.workflow_key, delta)
            pipe.execute()
        except redis.RedisError:
            pass  # the reservation stays counted: budgets err on the side of spending less


def spent(connector: str, run_id: str, workflow: str) -> tuple[int, int]:
    """Tokens used so far by the run and by the workflow today, on ``connector``."""
    run_key, workflow_key = _keys(connector, run_id, workflow)
    values = keys.client().mget([run_key, workflow_key])
    return int(values[0] or 0), int(values[1] or 0)
