"""The typed rows transitions read and write: a run with its audit head, and a step row."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from orchestra.audit import ChainHead, chain_event
from orchestra.models import NO_ITEM, utcnow

if TYPE_CHECKING:
    from orchestra.rawsql import Record, Tx


class Outcome(str, Enum):
    """What a claim decided for one step message."""

    RUN = "run"  # claimed: execute it
    DONE = "done"  # already ended well, or ended by this claim (skipped, abandoned); nothing to execute
    PASS = "pass"  # not ready, held elsewhere, or the run ended
    FANOUT = "fanout"  # a for_each parent: send its items


@dataclass
class RunRow:
    """The run columns transitions read, with its audit head, held for one transaction."""

    id: str
    workflow: str
    version: int
    status: str
    input: Any
    submitted_by: str
    created_at: datetime
    head: ChainHead
    seq_read: int  # audit_seq as last read or written: a deferred write is guarded on it

    @classmethod
    def from_record(cls, row: Record) -> RunRow:
        return cls(id=row.id, workflow=row.workflow, version=row.version, status=row.status, input=row.input,
                   submitted_by=row.submitted_by, created_at=row.created_at,
                   head=ChainHead(row.id, row.audit_seq, row.audit_hash), seq_read=row.audit_seq)

    def event(self, tx: Tx, type: str, **fields: Any) -> None:
        """Append one event to the run's chain (written back to the run row by ``save``)."""
        tx.insert("audit_events", [chain_event(self.head, type, **fields)])

    def copy(self) -> RunRow:
        return replace(self, head=replace(self.head))

    def save(self, tx: Tx, **changes: Any) -> None:
        """Write the audit head, ``updated_at`` and ``changes`` back to the run row.

        Guarded on the audit head it started from: any other writer of this run
        moves the head on, so a plan made on an older snapshot is made again.
        A status it already has is not written: that would rewrite its indexes.
        """
        if changes.get("status") == self.status:
            del changes["status"]
        tx.update("runs", self.id, guard={"audit_seq": self.seq_read}, audit_seq=self.head.seq,
                  audit_hash=self.head.hash, updated_at=utcnow(), **changes)
        self.seq_read = self.head.seq
        self.status = changes.get("status", self.status)


@dataclass(frozen=True)
class StepRow:
    """One ``step_runs`` row: a step of a run, or one item of a fan-out (``item >= 0``)."""

    id: str
    run_id: str
    step_id: str
    item: int
    status: str
    attempts: int
    recoveries: int
    input: Any  # a top-level step's rendered `with`; an item's own value, never overwritten
    output: Any
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_token: str | None
    lease_expires_at: datetime | None

    @classmethod
    def from_record(cls, row: Record) -> StepRow:
        return cls(**{name: row[name] for name in _STEP_FIELDS})

    @property
    def is_item(self) -> bool:
        return self.item != NO_ITEM

    @property
    def label(self) -> str:
        """``step`` or ``step[item]``, as errors and events name it."""
        return self.step_id + (f"[{self.item}]" if self.is_item else "")

    def item_field(self) -> dict[str, int]:
        """``{"item": n}`` for an item's audit payload, nothing for a top-level step."""
        return {"item": self.item} if self.is_item else {}

    def as_read(self) -> dict[str, Any]:
        """What a plan decided on: a write guarded on it is refused if the row moved on meanwhile."""
        return {"status": self.status, "lease_token": self.lease_token, "lease_expires_at": self.lease_expires_at}

    def but(self, **changes: Any) -> StepRow:
        return replace(self, **changes)


_STEP_FIELDS = tuple(f.name for f in fields(StepRow))
STEP_COLUMNS = ", ".join(_STEP_FIELDS)
