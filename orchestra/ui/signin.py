"""Signing in with an API key, signing out, the landing redirect and the static files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from orchestra.auth import authenticate
from orchestra.errors import AuthError, NotFound
from orchestra.ui.web import CSRF_FIELD, STATIC_DIR, UIRoute, check_csrf, end_session, home_for, render, safe_next
from orchestra.ui.web import signed_in, start_session

router = APIRouter(route_class=UIRoute, include_in_schema=False)
_MEDIA = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


@router.get("/")
def root() -> RedirectResponse:
    """The site's root is the UI."""
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
def landing(request: Request) -> RedirectResponse:
    """The inbox for approvers, the runs for everyone else."""
    return RedirectResponse(home_for(signed_in(request)), status_code=303)


@router.get("/ui/signin")
def signin_page(request: Request, next: str | None = None, signed_out: bool = False) -> Response:
    """The sign-in form."""
    return render(request, "signin.html", next=safe_next(next), signed_out=signed_out, error=None)


@router.post("/ui/signin")
def signin(request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "") -> Response:
    """Check the key and keep it in the session cookie; the form again, with the reason, if it fails."""
    try:
        principal = authenticate(token.strip())
    except AuthError as exc:
        return render(request, "signin.html", 401, next=safe_next(next), signed_out=False, error=exc.message)
    response = RedirectResponse(safe_next(next) or home_for(principal), status_code=303)
    start_session(request, response, token.strip())
    return response


@router.post("/ui/signout")
def signout(request: Request, csrf_token: Annotated[str, Form(alias=CSRF_FIELD)] = "") -> Response:
    """Forget the session cookie."""
    check_csrf(request, csrf_token)
    response = RedirectResponse("/ui/signin?signed_out=true", status_code=303)
    end_session(request, response)
    return response


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """For browsers that ask before reading the page's ``<link rel="icon">``."""
    return static("favicon.svg")


@router.get("/ui/static/{name}")
def static(name: str) -> FileResponse:
    """The stylesheet and the small polling script; nothing outside ``ui/static``."""
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or not path.is_file() or path.suffix not in _MEDIA:
        raise NotFound(f"no static file '{name}'")
    return FileResponse(path, media_type=_MEDIA[path.suffix], headers={"Cache-Control": "public, max-age=300"})
