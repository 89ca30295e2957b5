"""The connector base: what every connector kind shares.

Its base config and class, secrets read by
environment variable name (``token_env: PAYMENTS_TOKEN``, never written in the
file), ``with`` parsing, and the audit of each call. ``orchestra.connectors.registry``
reads ``config/connectors.yaml`` and builds each connector once per process.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from orchestra.errors import ConfigError, ConnectorError, GuardrailBlocked
from orchestra.redact import redact, register_secret
from orchestra.settings import get_settings
from orchestra.spec import parse_duration

if TYPE_CHECKING:
    from orchestra.call import StepCall

log = logging.getLogger(__name__)

_RATE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*/\s*(?P<unit>ms|s|m|h|d|sec|second|min|minute|hour|day)\s*$")
_RATE_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
                 "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(value: Any) -> float:
    """Calls per second in ``value``, written like ``20/s``, ``600/m`` or ``5/minute``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _RATE.match(str(value))
    if not match or float(match["n"]) <= 0:
        raise ValueError(f"'{value}' is not a rate; write it like '20/s', '600/m' or '1000/h'")
    return float(match["n"]) / _RATE_SECONDS[match["unit"]]


def read_secret(env: str, *, what: str, optional: bool = False) -> str | None:
    """The value of environment variable ``env``, registered for redaction."""
    value = os.environ.get(env)
    if not value:
        if optional:
            return None
        raise ConnectorError(f"{what} reads its secret from ${env}, which is not set; export {env}", retryable=False)
    register_secret(value)
    return value


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectorConfig(_Config):
    """What every connector has: a name, a kind, limits and a timeout."""

    name: str = ""
    kind: str
    description: str = ""
    timeout: float = 30.0
    rate_limit: float | None = None
    burst: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)

    _duration = field_validator("timeout", mode="before")(lambda v: parse_duration(v))
    _rate = field_validator("rate_limit", mode="before")(lambda v: None if v is None else parse_rate(v))


class Connector:
    """A built connector. Subclasses add the calls; ``close`` frees pooled resources."""

    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    def close(self) -> None:
        """Release pools and engines; does nothing by default."""


def audit_call(call: StepCall, type: str, payload: dict[str, Any]) -> None:
    """Audit one connector call (``http.called``, ``guardrail.blocked``, ...) with the step's outcome.

    The event joins the step's journal, which ``orchestra.transitions`` writes in the
    transaction that records how the step ended, secrets redacted.
    """
    call.record(type, redact(payload))


M = TypeVar("M", bound=BaseModel)


def parse_with(call: StepCall, model: type[M], params: dict[str, Any], *, what: str, fields: str = "") -> M:
    """A step's rendered ``with`` as ``model``, or a ``ConnectorError`` naming each bad field and the fields to use."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'with'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        hint = f"; use {fields}" if fields else ""
        raise ConnectorError(f"step '{call.step_id}' has a bad `with` for {what}: {problems}{hint}",
                             retryable=False) from None


def block(call: StepCall, rule: str, reason: str, **details: Any) -> GuardrailBlocked:
    """Audit a ``guardrail.blocked`` event and return the error for the caller to raise."""
    audit_call(call, "guardrail.blocked", {"rule": rule, "reason": reason, **details})
    return GuardrailBlocked(f"blocked by {rule}: {reason}", rule=rule)
