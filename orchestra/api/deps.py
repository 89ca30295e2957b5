"""Who is calling: a Bearer token, or (for the web UI) a signed session cookie holding one."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from itsdangerous import BadSignature, URLSafeTimedSerializer

from orchestra.auth import Principal, authenticate
from orchestra.errors import AuthError
from orchestra.notify import secret_key

SESSION_COOKIE = "orchestra_session"
SESSION_MAX_AGE = 12 * 3600
_bearer = HTTPBearer(auto_error=False, description="An API key from `orchestra keys create`.")


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(), salt="orchestra-session")


def session_cookie(token: str) -> str:
    """The signed cookie value that stands for ``token``; set it Secure, HttpOnly, SameSite=Lax."""
    return _serializer().dumps(token)


def token_from_cookie(value: str) -> str:
    try:
        token = _serializer().loads(value, max_age=SESSION_MAX_AGE)
    except BadSignature:
        raise AuthError("the session expired or is not valid; sign in again with your API key") from None
    return str(token)


def principal_from_request(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Principal:
    """The caller: the Bearer token if sent, else the session cookie; 401 if neither authenticates."""
    if credentials is not None:
        principal = authenticate(credentials.credentials)
    elif SESSION_COOKIE in request.cookies:
        principal = authenticate(token_from_cookie(request.cookies[SESSION_COOKIE]))
    else:
        authenticate(None)
        raise AssertionError("unreachable")
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(principal_from_request)]
