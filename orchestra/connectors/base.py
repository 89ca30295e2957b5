"""Connector configuration, the per-process registry, policy checks and audit.

``config/connectors.yaml`` declares each connector under ``connectors:`` by
name. Its ``kind`` picks the model (``http``, ``sql``, ``llm``); secrets are
named by environment variable (``token_env: PAYMENTS_TOKEN``) and never
written in the file. ``get_connector(name)`` builds a connector once per
process (after a fork, again) so HTTP pools and engines are reused.
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
    from orchestra.steps.base import StepCall

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


def _config_union() -> TypeAdapter[Any]:
    from orchestra.connectors.http import HttpConfig
    from orchestra.connectors.llm import LlmConfig
    from orchestra.connectors.sql import SqlConfig

    union = Annotated[HttpConfig | SqlConfig | LlmConfig, Field(discriminator="kind")]
    return TypeAdapter(union)


def parse_connectors(data: Any, *, source: str = "connectors.yaml") -> dict[str, ConnectorConfig]:
    """Validate the parsed YAML; raise ``ConfigError`` naming the field and the fix."""
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("connectors", {}), dict):
        raise ConfigError(f"{source}: expected a mapping `connectors: {{<name>: {{kind: http|sql|llm, ...}}}}`")
    adapter = _config_union()
    found: dict[str, ConnectorConfig] = {}
    problems: list[str] = []
    for name, body in (data.get("connectors") or {}).items():
        if not re.fullmatch(r"[a-z0-9_-]+", str(name)):
            problems.append(f"connectors.{name}: use lowercase letters, digits, '-' and '_' in connector names")
            continue
        if not isinstance(body, dict) or body.get("kind") not in ("http", "sql", "llm"):
            problems.append(f"connectors.{name}.kind: set kind to one of http, sql, llm")
            continue
        try:
            found[name] = adapter.validate_python({**body, "name": name})
        except ValidationError as exc:
            problems.extend(_describe(name, err) for err in exc.errors())
    if problems:
        raise ConfigError(f"{source} is invalid:\n  " + "\n  ".join(problems))
    return found


def _describe(name: str, err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"][1:] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    hint = {"missing": "; add this field", "extra_forbidden": "; remove it or check its spelling"}.get(err["type"], "")
    return f"connectors.{name}.{loc}: {msg}{hint}"


def load_connectors(path: Path | None = None) -> dict[str, ConnectorConfig]:
    """Read and validate ``connectors.yaml`` (default: under the config directory)."""
    path = path or get_settings().config_dir / "connectors.yaml"
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}; fix the syntax") from None
    return parse_connectors(data, source=str(path))


class Registry:
    """The connectors built in this process, rebuilt after a fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._configs: dict[str, ConnectorConfig] | None = None
        self._built: dict[str, Connector] = {}
        self._pid = os.getpid()

    def configure(self, configs: dict[str, ConnectorConfig] | None) -> None:
        """Use ``configs`` instead of the file (``None``: read the file again on next use)."""
        with self._lock:
            self._close_all()
            self._configs = configs

    def get(self, name: str) -> Connector:
        with self._lock:
            if self._pid != os.getpid():
                self._built, self._pid = {}, os.getpid()  # pools from the parent are not ours
            if self._configs is None:
                self._configs = load_connectors()
            if name not in self._built:
                config = self._configs.get(name)
                if config is None:
                    known = ", ".join(sorted(self._configs)) or "none"
                    raise ConnectorError(f"unknown connector '{name}'; declare it in config/connectors.yaml "
                                         f"(declared: {known})", retryable=False)
                self._built[name] = build(config)
            return self._built[name]

    def _close_all(self) -> None:
        for connector in self._built.values():
            try:
                connector.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.exception("closing connector %s failed", connector.name)
        self._built = {}


registry = Registry()


def get_connector(name: str) -> Connector:
    """The connector ``name`` for this process."""
    return registry.get(name)


def build(config: ConnectorConfig) -> Connector:
    from orchestra.connectors.http import HttpConfig, HttpConnector
    from orchestra.connectors.llm import LlmConfig, LlmConnector
    from orchestra.connectors.sql import SqlConfig, SqlConnector

    if isinstance(config, HttpConfig):
        return HttpConnector(config)
    if isinstance(config, SqlConfig):
        return SqlConnector(config)
    if isinstance(config, LlmConfig):
        return LlmConnector(config)
    raise ConfigError(f"connector '{config.name}' has kind '{config.kind}', which this worker cannot build")


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


def connector_for(call: StepCall, name: str, kind: type[Connector] | None = None) -> Connector:
    """The connector ``name`` after checking, at run time, that the workflow may use it."""
    if name not in call.spec.connectors:
        raise block(call, "workflow.connectors", f"workflow '{call.spec.name}' does not list connector '{name}' "
                    "under `connectors`; add it there", connector=name)
    connector = get_connector(name)
    if kind is not None and not isinstance(connector, kind):
        raise ConnectorError(f"connector '{name}' is a {connector.config.kind} connector; "
                             f"use `uses: {connector.config.kind}:{name}`", retryable=False)
    return connector

