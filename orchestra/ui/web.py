"""What every UI page shares: templates, the signed session, CSRF, and HTML error pages.

The session cookie holds the API key signed with the server's secret
(``orchestra.api.deps.session_cookie``); it is HttpOnly and SameSite=Lax, and
Secure whenever the UI is served over HTTPS. Every form that changes state also
carries a CSRF token derived from the session, so a cross-site form post fails
even in a browser that ignores SameSite.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from orchestra.api.deps import SESSION_COOKIE, SESSION_MAX_AGE, principal_from_cookie, session_cookie
from orchestra.api.deps import end_session as forget_session
from orchestra.auth import Permission, Principal, authenticate
from orchestra.errors import AuthError, Conflict, ErrorList, Forbidden, NotAssignee, NotFound, OrchestraError
from orchestra.notify import secret_key
from orchestra.settings import get_settings
from orchestra.ui.present import FILTERS

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
CSRF_FIELD = "csrf_token"


class SignInRequired(Exception):
    """The page needs a signed-in user; the route class redirects to the sign-in page."""


def open_task_count(principal: Principal | None) -> int:
    """How many open tasks ``principal`` may decide: the number on the Inbox badge."""
    from orchestra import decisions

    if principal is None or not principal.can(Permission.tasks_decide):
        return 0
    return len(decisions.list_tasks(principal.name, principal.groups, is_admin=principal.is_admin, limit=1000))


templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                        autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                        lstrip_blocks=True)
templates.filters.update(FILTERS)
templates.globals.update(Permission=Permission, open_tasks=open_task_count)


def csrf_token(request: Request) -> str:
    """The token every state-changing form of this session must send back."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return hmac.new(secret_key().encode(), f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()[:40]


def check_csrf(request: Request, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(sent, csrf_token(request)):
        raise Forbidden("the form expired or did not come from this site; reload the page and try again")


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a template with the signed-in principal (if any) and the CSRF token in its context."""
    principal = getattr(request.state, "principal", None)
    html = templates.get_template(name).render(request=request, me=principal, csrf=csrf_token(request), **context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def signed_in(request: Request) -> Principal:
    """The principal of the session cookie; ``SignInRequired`` without a valid session."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        raise SignInRequired()
    try:
        principal = principal_from_cookie(value)
    except AuthError as exc:
        request.state.signin_reason = exc.message
        raise SignInRequired() from None
    request.state.principal = principal
    return principal


def start_session(request: Request, response: Response, token: str) -> None:
    """Keep ``token`` in the signed session cookie."""
    response.set_cookie(SESSION_COOKIE, session_cookie(token), max_age=SESSION_MAX_AGE, path="/", httponly=True,
                        samesite="lax", secure=_secure(request))


def end_session(request: Request, response: Response) -> None:
    value = request.cookies.get(SESSION_COOKIE)
    if value:
        forget_session(value)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(request))


def _secure(request: Request) -> bool:
    # Browsers drop a Secure cookie sent over plain http; the dev server on loopback is plain http.
    return request.url.scheme == "https" or get_settings().public_url.startswith("https:")


def home_for(principal: Principal) -> str:
    """Where a user lands after signing in: the inbox for approvers, the overview for the rest."""
    if principal.can(Permission.tasks_decide) and not principal.can(Permission.runs_read):
        return "/ui/inbox"
    return "/ui/home"


def safe_next(target: str | None) -> str | None:
    """Only a path inside the UI may be a redirect target, never another site."""
    if target and target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def _status_of(exc: OrchestraError) -> tuple[int, str]:
    for kind, status, title in ((NotAssignee, 403, "Not assigned to you"), (Forbidden, 403, "Not allowed"),
                                (NotFound, 404, "Not found"), (Conflict, 409, "Conflict"),
                                (ErrorList, 422, "Invalid request")):
        if isinstance(exc, kind):
            return status, title
    return 503, "Unavailable"


class UIRoute(APIRoute):
    """Turn sign-in redirects and Orchestra errors into pages instead of the API's JSON errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except SignInRequired:
                wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.headers.get("x-orchestra-fragment"):
                    return Response(status_code=401)
                return RedirectResponse(f"/ui/signin?next={quote(wanted, safe='')}", status_code=303)
            except RequestValidationError as exc:
                detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
                return render(request, "error.html", 422, title="Invalid request", message=detail)
            except AuthError as exc:
                if not isinstance(exc, Forbidden):
                    return render(request, "error.html", 401, title="Not signed in", message=exc.message)
                return render(request, "error.html", 403, title="Not allowed", message=exc.message)
            except OrchestraError as exc:
                status, title = _status_of(exc)
                return render(request, "error.html", status, title=title, message=str(exc))

        return handler
