"""The connectors of ``config/connectors.yaml``, validated, and built once per process.

``config/connectors.yaml`` declares each connector under ``connectors:`` by
name; its ``kind`` picks the model (``http``, ``sql``, ``llm``).
``get_connector(name)`` builds a connector once per process (after a fork,
again) so HTTP pools and engines are reused. ``connector_for`` is where a step
asks for one, and where the workflow's own ``connectors:`` list is enforced.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from orchestra.connectors.base import Connector, ConnectorConfig, block
from orchestra.connectors.http import HttpConfig, HttpConnector
from orchestra.connectors.llm import LlmConfig, LlmConnector
from orchestra.connectors.sql import SqlConfig, SqlConnector
from orchestra.errors import ConfigError, ConnectorError
from orchestra.settings import get_settings

if TYPE_CHECKING:
    from orchestra.call import StepCall

log = logging.getLogger(__name__)


def _config_union() -> TypeAdapter[Any]:
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
    if isinstance(config, HttpConfig):
        return HttpConnector(config)
    if isinstance(config, SqlConfig):
        return SqlConnector(config)
    if isinstance(config, LlmConfig):
        return LlmConnector(config)
    raise ConfigError(f"connector '{config.name}' has kind '{config.kind}', which this worker cannot build")


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

