"""The audit trail: append-only events, hash-chained per run.

Each event's ``hash`` covers its own fields and the ``hash`` of the event before
it, so editing, deleting or reordering any row breaks every hash after it. The
chain's head lives on the run row, which the caller holds locked for the length
of its transaction (see ``orchestra.db``), so concurrent writers never fork it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestra.ids import new_id
from orchestra.models import AuditEvent, utcnow
from orchestra.redact import redact

GENESIS = "0" * 64


_FIELDS = ("run_id", "seq", "type", "actor", "step_id", "at", "payload", "prev_hash")
# What json.dumps(..., default=str) and json.dumps(..., sort_keys=True, separators=(",", ":"), default=str) make,
# built once: json.dumps builds a new encoder for every call that passes options.
_AS_JSON = json.JSONEncoder(default=str)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _digest(values: dict[str, Any]) -> str:
    body = {k: values[k] for k in _FIELDS}
    body["at"] = values["at"].isoformat()
    return hashlib.sha256(_CANONICAL.encode(body).encode()).hexdigest()


def _event_values(event: AuditEvent) -> dict[str, Any]:
    return {k: getattr(event, k) for k in _FIELDS}


@dataclass
class ChainHead:
    """Where a run's chain ends: the run row's ``audit_seq`` and ``audit_hash``."""

    run_id: str
    seq: int
    hash: str


def chain_event(
    head: ChainHead,
    type: str,
    *,
    actor: str = "system",
    step_id: str | None = None,
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The next event after ``head``, hashed, as a row to insert; moves ``head`` on.

    The caller inserts the row and writes the head back to the run row, in the
    transaction that holds the run locked.
    """
    values: dict[str, Any] = {
        "id": new_id(), "run_id": head.run_id, "seq": head.seq + 1, "type": type, "actor": actor, "step_id": step_id,
        "at": at or utcnow(), "payload": json.loads(_AS_JSON.encode(redact(payload or {}))),
        "prev_hash": head.hash or GENESIS,
    }
    values["hash"] = _digest(values)
    head.seq, head.hash = values["seq"], values["hash"]
    return values


@dataclass(frozen=True)
class Verification:
    """The outcome of recomputing a run's chain."""

    verified: bool
    events: int
    first_bad_seq: int | None = None
    reason: str = ""


def list_events(session: Session, run_id: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.run_id == run_id).order_by(AuditEvent.seq)))


def verify_chain(events: list[AuditEvent], head: str | None = None) -> Verification:
    """Recompute every hash; report the first event that does not match."""
    prev = GENESIS
    for expected_seq, event in enumerate(events, start=1):
        if event.seq != expected_seq:
            return Verification(False, len(events), expected_seq, f"event {expected_seq} is missing")
        if event.prev_hash != prev:
            return Verification(False, len(events), event.seq, f"event {event.seq} does not link to the event before it")
        if _digest(_event_values(event)) != event.hash:
            return Verification(False, len(events), event.seq, f"event {event.seq} ({event.type}) was altered")
        prev = event.hash
    if head is not None and events and head != prev:
        return Verification(False, len(events), len(events) + 1, "events after the last one were deleted")
    return Verification(True, len(events))


def event_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "run_id": event.run_id,
        "seq": event.seq,
        "type": event.type,
        "actor": event.actor,
        "step_id": event.step_id,
        "at": event.at.isoformat(),
        "payload": event.payload,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
