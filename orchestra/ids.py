"""Identifiers: UUID version 7, so that ids sort by creation time."""

from __future__ import annotations

import uuid

import uuid6


def new_id() -> str:
    """A new UUIDv7 as a string."""
    return str(uuid6.uuid7())


def is_uuid(value: str) -> bool:
    """Whether ``value`` parses as a UUID."""
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True
