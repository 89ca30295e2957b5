"""The Python client for Orchestra's HTTP API, sync (``Client``) and async (``AsyncClient``), on httpx.

    from orchestra.client import Client

    with Client("http://127.0.0.1:8000", token) as orchestra:
        run = orchestra.submit("refund-request", {"order_id": "A1"}, idempotency_key="A1")
        run = orchestra.wait(run["id"], timeout=60)

Every error response becomes a typed exception carrying the API's ``errors`` list.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from orchestra import errors as errors_module

__all__ = [
    "AsyncClient", "Client", "ClientError", "Conflict", "Forbidden", "InvalidRequest", "NotFound", "PayloadTooLarge",
    "ServerError", "Unauthorized", "Unavailable", "WaitTimeout",
]

SETTLED = frozenset({"succeeded", "failed", "cancelled", "waiting"})  # what wait() returns on by default


class ClientError(errors_module.OrchestraError):
    """An error response from the API; ``errors`` holds its ``[{loc, msg, type}]`` items.

    Each one is also the library's own error for the same thing (``Conflict`` is an
    ``orchestra.errors.Conflict``), so code catches one tree whether it calls the API or the library.
    """

    status_code: int = 0

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None, status_code: int | None = None,
                 response: httpx.Response | None = None) -> None:
        errors_module.OrchestraError.__init__(self, message)
        self.errors = errors or []
        self.response = response
        if status_code is not None:
            self.status_code = status_code


class Unauthorized(ClientError, errors_module.AuthError):
    """401: no token, or one that is unknown, revoked or expired."""

    status_code = 401


class Forbidden(ClientError, errors_module.Forbidden):
    """403: the key's role (or groups) may not do this."""

    status_code = 403


class NotFound(ClientError, errors_module.NotFound):
    """404: no such run, workflow, task or schedule."""

    status_code = 404


class Conflict(ClientError, errors_module.Conflict):
    """409: idempotency key reused with another body, task already decided or expired, wrong run state."""

    status_code = 409


class PayloadTooLarge(ClientError):
    """413: the body is over the server's limit."""

    status_code = 413


class InvalidRequest(ClientError, errors_module.InputError):
    """422: the request, spec, input or form input is invalid; ``errors`` names each field."""

    status_code = 422


class Unavailable(ClientError, errors_module.Unavailable):
    """503: Redis or the database is down. A submitted run is recorded and dispatched later."""

    status_code = 503


class ServerError(ClientError):
    """Any other 5xx."""


class WaitTimeout(ClientError):
    """``wait`` gave up before the run reached one of the wanted statuses."""


_BY_STATUS: dict[int, type[ClientError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: PayloadTooLarge, 422: InvalidRequest,
    503: Unavailable,
}


def raise_for_error(response: httpx.Response) -> None:
    """Raise the typed error for a 4xx/5xx response in the API's error shape."""
    if response.status_code < 400:
        return
    try:
        errors = list(response.json().get("errors") or [])
    except (ValueError, AttributeError):
        errors = [{"loc": [], "msg": response.text[:500] or response.reason_phrase, "type": "http_error"}]
    kind = _BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else ClientError)
    message = "; ".join(_describe(e) for e in errors) or f"HTTP {response.status_code}"
    raise kind(f"{response.status_code}: {message}", errors, response.status_code, response)


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error.get("loc") or [])
    return f"{loc}: {error.get('msg')}" if loc else str(error.get("msg"))


def _submit_body(workflow: str, input: Any, version: int | None, idempotency_key: str | None,
                 key: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"workflow": workflow, "input": input if input is not None else {}}
    return {**body, **_query(version=version, idempotency_key=idempotency_key, key=key)}


def _query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _backoff(initial: float, maximum: float) -> Iterator[float]:
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * 1.5)


class _Base:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "User-Agent": "orchestra-client"}
        self.timeout = timeout


class Client(_Base):
    """A synchronous client. Use it as a context manager, or call ``close()``."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, token, timeout=timeout)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        raise_for_error(response)
        return response.json() if response.content else None

    def submit(self, workflow: str, input: Any = None, *, version: int | None = None,
               idempotency_key: str | None = None, key: str | None = None) -> dict[str, Any]:
        """Start a run; the same idempotency key and body return the same run. ``key`` is a business key."""
        body = _submit_body(workflow, input, version, idempotency_key, key)
        return dict(self._call("POST", "/v1/runs", json=body))

    def get(self, run_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/runs/{run_id}"))

    def wait(self, run_id: str, *, timeout: float = 60.0, statuses: frozenset[str] = SETTLED,
             poll: float = 0.2, max_poll: float = 5.0) -> dict[str, Any]:
        """Poll with backoff until the run reaches one of ``statuses``; ``WaitTimeout`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for delay in _backoff(poll, max_poll):
            run = self.get(run_id)
            if run["status"] in statuses:
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"run {run_id} is still {run['status']} after {timeout}s")
            time.sleep(min(delay, left))
        raise AssertionError("unreachable")

    def list_runs(self, *, workflow: str | None = None, status: str | None = None, limit: int | None = None,
                  cursor: str | None = None, key: str | None = None) -> dict[str, Any]:
        """``{runs, next_cursor}``, newest first; ``key`` keeps the runs submitted with that business key."""
        params = _query(workflow=workflow, status=status, limit=limit, cursor=cursor, key=key)
        return dict(self._call("GET", "/v1/runs", params=params))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/runs/{run_id}/cancel"))

    def retry(self, run_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/runs/{run_id}/retry"))

    def signal(self, run_id: str, name: str, payload: Any = None) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/runs/{run_id}/signals/{name}", json={"payload": payload}))

    def tasks(self, status: str = "open") -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/tasks", params={"status": status})["tasks"])

    def decide(self, task_id: str, decision: str, input: Any = None, comment: str | None = None) -> dict[str, Any]:
        body = _query(decision=decision, input=input, comment=comment)
        return dict(self._call("POST", f"/v1/tasks/{task_id}/decision", json=body))

    def audit(self, run_id: str) -> dict[str, Any]:
        """``{events, verified}``."""
        return dict(self._call("GET", f"/v1/runs/{run_id}/audit"))

    def audit_lines(self, run_id: str) -> list[dict[str, Any]]:
        """The audit events as exported in JSON Lines."""
        response = self._http.get(f"/v1/runs/{run_id}/audit", headers={"Accept": "application/x-ndjson"})
        raise_for_error(response)
        return [json.loads(line) for line in response.text.splitlines() if line]


class AsyncClient(_Base):
    """The asynchronous client; the same methods as ``Client``, awaited."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, token, timeout=timeout)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                       transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        raise_for_error(response)
        return response.json() if response.content else None

    async def submit(self, workflow: str, input: Any = None, *, version: int | None = None,
                     idempotency_key: str | None = None, key: str | None = None) -> dict[str, Any]:
        body = _submit_body(workflow, input, version, idempotency_key, key)
        return dict(await self._call("POST", "/v1/runs", json=body))

    async def get(self, run_id: str) -> dict[str, Any]:
        return dict(await self._call("GET", f"/v1/runs/{run_id}"))

    async def wait(self, run_id: str, *, timeout: float = 60.0, statuses: frozenset[str] = SETTLED,
                   poll: float = 0.2, max_poll: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for delay in _backoff(poll, max_poll):
            run = await self.get(run_id)
            if run["status"] in statuses:
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"run {run_id} is still {run['status']} after {timeout}s")
            await asyncio.sleep(min(delay, left))
        raise AssertionError("unreachable")

    async def list_runs(self, *, workflow: str | None = None, status: str | None = None, limit: int | None = None,
                        cursor: str | None = None, key: str | None = None) -> dict[str, Any]:
        params = _query(workflow=workflow, status=status, limit=limit, cursor=cursor, key=key)
        return dict(await self._call("GET", "/v1/runs", params=params))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/v1/runs/{run_id}/cancel"))

    async def retry(self, run_id: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/v1/runs/{run_id}/retry"))

    async def signal(self, run_id: str, name: str, payload: Any = None) -> dict[str, Any]:
        return dict(await self._call("POST", f"/v1/runs/{run_id}/signals/{name}", json={"payload": payload}))

    async def tasks(self, status: str = "open") -> list[dict[str, Any]]:
        return list((await self._call("GET", "/v1/tasks", params={"status": status}))["tasks"])

    async def decide(self, task_id: str, decision: str, input: Any = None,
                     comment: str | None = None) -> dict[str, Any]:
        body = _query(decision=decision, input=input, comment=comment)
        return dict(await self._call("POST", f"/v1/tasks/{task_id}/decision", json=body))

    async def audit(self, run_id: str) -> dict[str, Any]:
        return dict(await self._call("GET", f"/v1/runs/{run_id}/audit"))
