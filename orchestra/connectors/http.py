"""The HTTP connector: a pooled httpx client per connector, fenced to its base URL.

A request may only reach the connector's ``base_url`` with a method and a path
on its allow-list. Connect errors, 5xx and 429 are retried by tenacity (honouring
``Retry-After``); other 4xx fail at once with the response body in the error.
Every request carries an ``Idempotency-Key`` derived from run, step and item, so
a redelivered step does not act twice on a system that honours the header.
"""

from __future__ import annotations

import email.utils
import fnmatch
import os
import random
import time
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from orchestra.connectors import limits
from orchestra.connectors.base import Connector, ConnectorConfig, audit_call, block, parse_with, read_secret
from orchestra.errors import ConnectorError, ConnectorUnavailable
from orchestra.redact import redact, redact_text
from orchestra.spec import parse_duration

if TYPE_CHECKING:
    from orchestra.call import StepCall

MAX_ERROR_BODY = 500
_RESERVED_HEADERS = {"host", "authorization", "idempotency-key", "cookie", "proxy-authorization"}


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpAuth(_Config):
    """Credentials read from environment variables by name, never written in config."""

    type: Literal["bearer", "basic", "header"]
    token_env: str | None = None  # bearer
    username_env: str | None = None  # basic
    password_env: str | None = None  # basic
    header: str = "X-API-Key"  # header
    value_env: str | None = None  # header
    optional: bool = False  # unset variables send no credentials instead of failing


class HttpAllow(_Config):
    """Which methods and paths a step may use. Paths are globs: ``/refunds``, ``/orders/*``."""

    methods: list[str] = Field(default_factory=lambda: ["GET"])
    paths: list[str] = Field(default_factory=lambda: ["/*"])

    _upper = field_validator("methods")(lambda v: [m.upper() for m in v])


class HttpRetry(_Config):
    """The connector's own retries, inside one step attempt."""

    attempts: int = Field(default=4, ge=1, le=20)
    backoff: float = 0.2
    max_wait: float = 10.0  # a longer Retry-After is handed to the step runtime instead

    _durations = field_validator("backoff", "max_wait", mode="before")(lambda v: parse_duration(v))


class HttpConfig(ConnectorConfig):
    """``kind: http``."""

    kind: Literal["http"]
    base_url: str
    base_url_env: str | None = None  # when set and present, overrides base_url
    headers: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth | None = None
    allow: HttpAllow = Field(default_factory=HttpAllow)
    retry: HttpRetry = Field(default_factory=HttpRetry)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not an http(s) URL; write it like https://payments.example.com/api")
        return value.rstrip("/")


class HttpRequest(_Config):
    """A step's ``with`` for ``uses: http:<name>``."""

    method: str = "GET"
    path: str = "/"
    params: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    json_: Any = Field(default=None, alias="json")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Transient(Exception):
    """A failure worth another try: a connect error, a 5xx or a 429."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


class _RetryAfterTooLong(stop_base):
    """Stop sleeping in the worker when the system asks for a longer wait than ``max_wait``."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait

    def __call__(self, retry_state: RetryCallState) -> bool:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return bool((getattr(exc, "retry_after", None) or 0) > self.max_wait)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds in a ``Retry-After`` header: a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpConnector(Connector):
    """Calls one system of record over HTTP."""

    config: HttpConfig

    def __init__(self, config: HttpConfig) -> None:
        super().__init__(config)
        self.base_url = os.environ.get(config.base_url_env or "", "").rstrip("/") or config.base_url
        self._client = httpx.Client(timeout=httpx.Timeout(config.timeout), follow_redirects=False,
                                    headers=config.headers, limits=httpx.Limits(max_connections=20))

    def close(self) -> None:
        self._client.close()

    def parse_request(self, call: StepCall, params: dict[str, Any]) -> HttpRequest:
        return parse_with(call, HttpRequest, params, what=f"http:{self.name}",
                          fields="method, path, params, headers, json")

    def url_for(self, call: StepCall, request: HttpRequest) -> tuple[str, dict[str, Any]]:
        """The full URL after the allow-list and base-URL fence, with the guardrail decision that allowed it.

        Raises ``GuardrailBlocked`` (audited) when a rule refuses the call.
        """
        method, path = request.method.upper(), request.path
        details = {"connector": self.name, "method": method, "path": path}
        if method not in self.config.allow.methods:
            raise block(call, "http.allow.methods", f"{method} is not allowed on connector '{self.name}' "
                        f"(allowed: {', '.join(self.config.allow.methods)})", **details)
        bare = path.split("?", 1)[0]
        if not _is_plain_path(bare):
            raise block(call, "http.base_url", f"path '{path}' must be an absolute path under the connector's "
                        "base URL, without '..', '//', '@', '\\' or a host", **details)
        matched = next((p for p in self.config.allow.paths if fnmatch.fnmatchcase(bare, p)), None)
        if matched is None:
            raise block(call, "http.allow.paths", f"path '{bare}' is not on connector '{self.name}''s allow-list "
                        f"({', '.join(self.config.allow.paths)})", **details)
        url = httpx.URL(self.base_url + path)
        base = httpx.URL(self.base_url + "/")
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port) or not url.path.startswith(base.path):
            raise block(call, "http.base_url", f"'{path}' leaves the base URL of connector '{self.name}'", **details)
        if reserved := sorted(h for h in request.headers if h.lower() in _RESERVED_HEADERS):
            raise block(call, "http.headers", f"a step may not set {', '.join(reserved)}; the connector sets "
                        "credentials and the idempotency key", **details)
        allowed = {"decision": "allowed", "method": method, "path_rule": matched,
                   "rules": ["workflow.connectors", "http.allow.methods", "http.allow.paths", "http.base_url",
                             "http.headers"]}
        return str(url), allowed

    def _auth_headers(self) -> tuple[dict[str, str], httpx.BasicAuth | None]:
        auth = self.config.auth
        if auth is None:
            return {}, None
        what = f"connector '{self.name}'"
        if auth.type == "bearer":
            token = read_secret(auth.token_env or "", what=what, optional=auth.optional)
            return ({"Authorization": f"Bearer {token}"} if token else {}), None
        if auth.type == "basic":
            user = read_secret(auth.username_env or "", what=what, optional=auth.optional)
            password = read_secret(auth.password_env or "", what=what, optional=auth.optional)
            return {}, (httpx.BasicAuth(user, password) if user and password else None)
        value = read_secret(auth.value_env or "", what=what, optional=auth.optional)
        return ({auth.header: value} if value else {}), None

    def call(self, call: StepCall, request: HttpRequest) -> dict[str, Any]:
        """Send ``request`` for ``call`` with retries; return ``{status, headers, json|text}``."""
        url, guardrail = self.url_for(call, request)
        retry = self.config.retry
        lease = (self.config.timeout + retry.max_wait) * retry.attempts + 5
        started = time.monotonic()
        tries = 0

        def attempt() -> httpx.Response:
            nonlocal tries
            tries += 1
            return self._send(call, request, url)

        audit = {"connector": self.name, "method": request.method.upper(), "path": request.path,
                 "idempotency_key": call.idempotency_key, "guardrail": guardrail}
        with limits.guarded(self.config, lease):
            try:
                response = self._retrying()(attempt)
            except _Transient as exc:
                audit_call(call, "http.called", {**audit, "error": exc.message, "tries": tries})
                raise ConnectorUnavailable(f"http:{self.name} {request.method.upper()} {request.path} failed after "
                                           f"{tries} tries: {exc.message}", retry_after=exc.retry_after) from None
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        audit_call(call, "http.called", {**audit, "status": response.status_code, "tries": tries,
                                         "latency_ms": latency_ms})
        if response.status_code >= 400:
            body = redact_text(response.text[:MAX_ERROR_BODY])
            raise ConnectorError(f"http:{self.name} {request.method.upper()} {request.path} answered "
                                 f"{response.status_code}: {body}", retryable=False)
        return _output(response)

    def _retrying(self) -> Retrying:
        retry = self.config.retry

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hinted = getattr(exc, "retry_after", None)
            if hinted is not None:
                return float(min(hinted, retry.max_wait))
            return float(min(retry.max_wait, retry.backoff * 2 ** (state.attempt_number - 1) * random.uniform(0.8, 1.2)))

        return Retrying(stop=stop_any(stop_after_attempt(retry.attempts), _RetryAfterTooLong(retry.max_wait)), wait=wait,
                        retry=retry_if_exception_type(_Transient), reraise=True)

    def _send(self, call: StepCall, request: HttpRequest, url: str) -> httpx.Response:
        limits.take_request_token(self.config)
        auth_headers, basic = self._auth_headers()
        headers = {**request.headers, **auth_headers, "Idempotency-Key": call.idempotency_key}
        try:
            response = self._client.request(request.method.upper(), url, params=request.params or None,
                                            headers=headers, json=request.json_, auth=basic or httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as exc:
            raise _Transient(redact_text(f"{type(exc).__name__}: {exc}")) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise _Transient(f"answered {response.status_code}",
                             retry_after=retry_after_seconds(response.headers.get("retry-after")))
        return response


def _is_plain_path(path: str) -> bool:
    """Whether ``path`` stays under the base URL: absolute, no host, no dot segments (even encoded)."""
    lowered = path.lower()
    return (path.startswith("/") and not path.startswith("//") and "\\" not in path and "@" not in path
            and "%2e" not in lowered and "%2f" not in lowered and "%5c" not in lowered
            and ".." not in path.split("/") and "." not in path.split("/"))


def _output(response: httpx.Response) -> dict[str, Any]:
    out: dict[str, Any] = {"status": response.status_code, "headers": redact(dict(response.headers))}
    if "json" in response.headers.get("content-type", ""):
        try:
            out["json"] = redact(response.json())
            return out
        except ValueError:
            pass
    out["text"] = redact_text(response.text)
    return out
