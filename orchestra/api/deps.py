"""Who is calling: a Bearer token, or (for the web UI) a signed cookie naming a server-side session."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from itsdangerous import BadSignature, URLSafeTimedSerializer

from orchestra import keys
from orchestra.auth import Principal, authenticate, principal_for_key
from orchestra.errors import AuthError
from orchestra.notify import secret_key

SESSION_COOKIE = "orchestra_session"
SESSION_MAX_AGE = 12 * 3600
_bearer = HTTPBearer(auto_error=False, description="An API key from `orchestra keys create`.")


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(), salt="orchestra-session")


def session_cookie(token: str) -> str:
    """Open a UI session for ``token`` and return the signed cookie value that names it.

    The cookie carries only a random session id; the session (which key it stands
    for) lives in Redis for ``SESSION_MAX_AGE``, so the API key never leaves the
    request that signed in, and signing out ends the session for good.
    """
    principal = authenticate(token)
    assert principal.key_id is not None, "authenticate() always names the key"
    session_id = secrets.token_urlsafe(32)
    keys.client().set(keys.SESSION + session_id, principal.key_id, ex=SESSION_MAX_AGE)
    return _serializer().dumps(session_id)


def principal_from_cookie(value: str) -> Principal:
    """The principal of a UI session cookie; ``AuthError`` if it is forged, expired or ended."""
    try:
        session_id = str(_serializer().loads(value, max_age=SESSION_MAX_AGE))
    except BadSignature:
        raise AuthError("the session expired or is not valid; sign in again with your API key") from None
    key_id = keys.client().get(keys.SESSION + session_id)
    if not key_id:
        raise AuthError("the session ended or expired; sign in again with your API key")
    return principal_for_key(str(key_id))


def end_session(value: str) -> None:
    """Forget the session a cookie names; a copy of the cookie no longer signs anyone in."""
    try:
        session_id = str(_serializer().loads(value))
    except BadSignature:
        return
    keys.client().delete(keys.SESSION + session_id)


def principal_from_request(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Principal:
    """The caller: the Bearer token if sent, else the session cookie; 401 if neither authenticates."""
    if credentials is not None:
        principal = authenticate(credentials.credentials)
    elif SESSION_COOKIE in request.cookies:
        principal = principal_from_cookie(request.cookies[SESSION_COOKIE])
    else:
        authenticate(None)
        raise AssertionError("unreachable")
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(principal_from_request)]
