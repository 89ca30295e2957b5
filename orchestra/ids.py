"""Identifiers: UUID version 7, so that ids sort by creation time, and the short forms people type."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import uuid6

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


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


SHORT = 8  # listings show an id's last 8 characters; input takes 8+ characters from either end

_PIECE = re.compile(r"^[0-9a-fA-F-]+$")


def short(value: str) -> str:
    """How listings show an id: its last 8 characters.

    The first characters of a UUIDv7 are its timestamp (the first 8 change once a minute), so every run of
    the same minute shares them; the last 12 are random.
    """
    return value[-SHORT:]


def resolve_id(session: Session, column: Any, value: str, *, noun: str, listing: str) -> str:
    """The one full id in ``column`` that ``value`` names.

    ``value`` is a full id, a prefix of at least 8 characters, or the last 8+ characters as listings show
    them. A prefix is looked up on the primary key's index; a suffix scans the table.

    Raises:
        NotFound: no id matches, or ``value`` cannot be part of an id.
        InputError: ``value`` is shorter than 8 characters, or matches several ids (they are named).
    """
    from sqlalchemy import select

    from orchestra.errors import InputError, NotFound

    text = value.strip().lower()
    if is_uuid(text) and len(text) == 36:
        return str(uuid.UUID(text))
    if not _PIECE.match(text):
        raise NotFound(f"'{value}' is not a {noun} id; {noun} ids are UUIDs, list them with `{listing}`")
    if len(text.replace("-", "")) < SHORT:
        raise InputError(f"'{value}' is too short to name a {noun}", [{
            "loc": [f"{noun}_id"], "type": "id_too_short",
            "msg": f"give at least {SHORT} characters of the {noun} id (as `{listing}` shows them), or the whole id"}])
    found = list(session.scalars(select(column).where(column.like(f"{text}%")).order_by(column).limit(6)))
    if not found:
        found = list(session.scalars(select(column).where(column.like(f"%{text}")).order_by(column).limit(6)))
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise NotFound(f"no {noun} id starts or ends with '{value}'; list them with `{listing}`")
    names = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
    raise InputError(f"'{value}' matches several {noun}s", [{
        "loc": [f"{noun}_id"], "type": "id_ambiguous",
        "msg": f"'{value}' matches {names}; give more characters, or the whole id"}])
