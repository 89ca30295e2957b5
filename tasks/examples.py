"""Example step functions used by the demo workflow and the tests."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from orchestra.steps.task import step


@step
def normalize(text: str) -> dict[str, Any]:
    """Trim and lowercase a request, and count its words."""
    clean = re.sub(r"\s+", " ", text).strip()
    return {"text": clean.lower(), "words": len(clean.split())}


@step
def score(text: str, keywords: list[str] | None = None) -> dict[str, Any]:
    """A keyword score between 0 and 1."""
    keywords = keywords or ["refund", "broken", "late", "cancel"]
    hits = [k for k in keywords if k in text.lower()]
    return {"score": round(len(hits) / len(keywords), 2), "hits": hits}


@step
def fingerprint(value: Any) -> str:
    """A short, stable digest of any JSON value."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:12]


@step
def greet(name: str) -> str:
    return f"Hello, {name}!"


@step
def summarize(parts: list[Any]) -> dict[str, Any]:
    """Join several upstream outputs into one summary."""
    return {"count": len(parts), "parts": parts}


@step
def noop() -> None:
    """Does nothing; used to measure the orchestrator's own overhead."""
    return None
