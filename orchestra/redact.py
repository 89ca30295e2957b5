"""Secret redaction, by value and by key name.

Connectors register the secret values they read from the environment with
``register_secret``; every audit payload, error message and log line passes
through ``redact`` so those values never leave the process.
"""

from __future__ import annotations

import re
import threading
from typing import Any

MASK = "***"
_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|api[_-]?key|authorization|credential)", re.I)
_lock = threading.Lock()
_values: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that ``redact`` masks it wherever it appears."""
    if value and len(value) >= 4:
        with _lock:
            _values.add(value)


def redact_text(text: str) -> str:
    for value in sorted(_values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret values and secret-named keys masked."""
    if isinstance(value, str):
        return redact_text(value) if _values else value
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _SECRET_KEYS.search(k) and isinstance(v, (str, int)) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
