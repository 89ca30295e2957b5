"""The HTTP API (FastAPI). ``create_app()`` builds it; ``orchestra api`` serves it with uvicorn."""

from __future__ import annotations

from orchestra.api.app import create_app

__all__ = ["create_app"]
