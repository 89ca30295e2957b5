"""Every error leaves the API in one shape: ``{"errors": [{"loc", "msg", "type"}]}``.

Orchestra's errors map to statuses here, at the edge; third-party errors that
escape a route become 503 (a dependency is down) or 500, never a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError as DatabaseDown
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestra.api.schemas import ErrorResponse
from orchestra.errors import (
    AuthError, ConfigError, Conflict, ErrorList, Forbidden, NotAssignee, NotFound, OrchestraError,
)
from orchestra.models import json_problem
from orchestra.errors import Unavailable

log = logging.getLogger(__name__)

# Most specific first: AlreadyDecided and TaskExpired are Conflicts, Forbidden is an AuthError.
STATUS: list[tuple[type[OrchestraError], int, str]] = [
    (Forbidden, 403, "forbidden"),
    (NotAssignee, 403, "not_assignee"),
    (AuthError, 401, "unauthorized"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (ErrorList, 422, "invalid"),
    (Unavailable, 503, "unavailable"),
    (ConfigError, 503, "unavailable"),
]


def error_body(msg: str, type: str, loc: list[Any] | None = None) -> dict[str, Any]:
    return {"errors": [{"loc": loc or [], "msg": msg, "type": type}]}


def error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse.model_validate(body).model_dump(), status_code=status, headers=headers)


def orchestra_error(request: Request, exc: Exception) -> JSONResponse:
    """An ``OrchestraError`` as its status and the error shape."""
    assert isinstance(exc, OrchestraError)
    for kind, status, type_ in STATUS:
        if isinstance(exc, kind):
            break
    else:
        status, type_ = 400, "error"
    if isinstance(exc, ErrorList):
        body = {"errors": [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")),
                            "type": str(e.get("type", type_))} for e in exc.errors]}
    else:
        body = error_body(exc.message, _snake(type(exc).__name__) if status == 409 else type_)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "5"}
    return error_response(status, body, headers)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation errors, trimmed to the error shape."""
    assert isinstance(exc, RequestValidationError)
    items = [{"loc": [p for p in e.get("loc", ()) if isinstance(p, (str, int))],
              "msg": _fix_hint(e), "type": str(e.get("type", "invalid"))} for e in exc.errors()]
    return error_response(422, {"errors": items or [{"loc": [], "msg": "invalid request", "type": "invalid"}]})


def _fix_hint(error: dict[str, Any]) -> str:
    msg = str(error.get("msg", "invalid"))
    if error.get("type") == "missing":
        return f"{msg}; add this field"
    if error.get("type") == "extra_forbidden":
        return f"{msg}; remove this field"
    return msg


def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI could not decode the body at all
        return error_response(422, error_body("the body is not valid UTF-8 JSON; send a JSON object", "json_invalid",
                                              ["body"]))
    msg = {404: f"no such endpoint {request.url.path}; see /openapi.json",
           405: f"{request.method} is not allowed on {request.url.path}; see /openapi.json"}.get(
        exc.status_code, str(exc.detail))
    return error_response(exc.status_code, error_body(msg, "http_error"), getattr(exc, "headers", None))


def dependency_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: a dependency is unavailable: %s", request.method, request.url.path, exc)
    what = "the database" if isinstance(exc, DatabaseDown) else "Redis"
    return error_response(503, error_body(f"{what} is unavailable; try again shortly", "unavailable"),
                          {"Retry-After": "5"})


def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, error_body("internal error; it was logged on the server", "internal"))


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""
    app.add_exception_handler(OrchestraError, orchestra_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(DatabaseDown, dependency_down)
    app.add_exception_handler(RedisError, dependency_down)
    app.add_exception_handler(Exception, unexpected)


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413 before the app sees them (ASGI middleware)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        msg = f"the request body is larger than {self.max_bytes} bytes; send less (ORCHESTRA_MAX_BODY_BYTES)"
        await error_response(413, error_body(msg, "too_large", ["body"]))(scope, receive, send)


class RefuseUnstorable:
    """Refuse with 422 what the results database cannot store (ASGI middleware).

    - A NUL character anywhere in a request: no name, key, id or text Orchestra
      stores may contain one, and PostgreSQL's text columns cannot hold it.
    - ``NaN`` or ``Infinity`` in a JSON body: Python's JSON parser accepts them,
      but they are not JSON, and PostgreSQL's JSON columns refuse them.
    - An unpaired UTF-16 surrogate (``\\ud800``) in a JSON string: it is not
      Unicode text, and no database driver can encode it.

    Refusing them at the edge keeps them out of every query instead of failing
    deep inside one with a 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = self._in_url(scope)
        first = await receive() if scope["method"] not in ("GET", "HEAD", "OPTIONS", "DELETE") else None
        if where is None and first is not None and _has_nul(first.get("body", b"")):
            where = "body"
        if where is not None:
            msg = f"the request's {where} contains a NUL character (\\u0000); remove it"
            await error_response(422, error_body(msg, "nul_character", [where]))(scope, receive, send)
            return
        problem = _json_problem(first.get("body", b"")) if first is not None else None
        if problem is not None:
            await error_response(422, error_body(f"the request body contains {problem}", "not_json", ["body"]))(
                scope, receive, send)
            return
        if first is None:
            await self.app(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _in_url(scope: Scope) -> str | None:
        path = scope.get("raw_path") or scope.get("path", "").encode()
        if b"\x00" in path or b"%00" in path:
            return "path"
        if b"%00" in (scope.get("query_string") or b"") or b"\x00" in (scope.get("query_string") or b""):
            return "query"
        return None


def _has_nul(body: bytes) -> bool:
    return b"\x00" in body or b"\\u0000" in body


class _Constant(Exception):
    pass


_SUSPECT = re.compile(rb"NaN|Infinity|\\u[dD][89a-fA-F]")  # a JSON constant, or an escaped UTF-16 surrogate


def _json_problem(body: bytes) -> str | None:
    """What, in a JSON body, the database cannot store: ``NaN`` or ``Infinity`` outside a string, or an unpaired
    surrogate such as ``\\ud800`` inside one. None for anything else, including a body that is not JSON."""
    if not _SUSPECT.search(body):
        return None

    def refuse(name: str) -> None:
        raise _Constant(name)

    try:
        value = json.loads(body, parse_constant=refuse)
    except _Constant as found:
        return f"{found}, which is not JSON; send a number, a string or null"
    except (ValueError, RecursionError):  # not JSON at all (YAML, a form): the route says what is wrong with it
        return None
    return json_problem(value)
