"""The web UI under ``/ui``: server-rendered pages for runs and the approval inbox.

Pages: ``/ui/home`` (the overview), ``/ui/runs``, ``/ui/inbox`` and each task.
``router`` is mounted by the API app (``orchestra.api.app.create_app``). Pages
call the library (``orchestra.runs``, ``orchestra.audit``,
``orchestra.decisions``) directly, with the principal of the signed session.
"""

from __future__ import annotations

from fastapi import APIRouter

from orchestra.ui import home, inbox, runs, signin

router = APIRouter(include_in_schema=False)
for _module in (signin, home, runs, inbox):
    router.include_router(_module.router)

__all__ = ["router"]
