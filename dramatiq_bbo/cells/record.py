"""The record of a move, one row per side (``bbo.organization_moves``, schema 0014).

Both rows share the move's id. The source's row is written first and finished last; the
target's row is written with the copy (one transaction) and finished with the resume. A step
is done when its record says so: that is what lets a re-run, reading both rows, carry on
from the step where a killed move stopped.
"""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..queries import query


class Step(enum.StrEnum):
    """The steps of a move, in order; ``on_step`` hears each once it committed."""

    PAUSED = "paused"  # source: the organization's unfinished operations paused
    DRAINED = "drained"  # source: no job of theirs runs under a live lease any more
    COPIED = "copied"  # target: operations and jobs copied, inert (paused and held)
    DELETED = "deleted"  # source: the operations and their jobs deleted
    RESUMED = "resumed"  # target: the operations as they were before the pause
    FINISHED = "finished"  # source: the move's record closed

    @property
    def order(self) -> int:
        return list(Step).index(self)


class Role(enum.StrEnum):
    SOURCE = "source"
    TARGET = "target"


@dataclass(frozen=True)
class MoveRecord:
    """One side's row: where the move stands there."""

    move_id: uuid.UUID
    role: Role
    organization_id: int
    source_name: str
    target_name: str
    step: Step
    #: operation id (text) → what it was before the move (source: its status; target: its
    #: status and hold), restored when it resumes at the target
    operations: dict[str, Any] = field(default_factory=dict)
    #: operation id (text) → its ``updated_at`` at the source when it was copied
    fingerprints: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MoveRecord:
        return cls(
            move_id=row["move_id"],
            role=Role(row["role"]),
            organization_id=int(row["organization_id"]),
            source_name=row["source_name"],
            target_name=row["target_name"],
            step=Step(row["step"]),
            operations=dict(row["operations"]),
            fingerprints=dict(row["fingerprints"]),
        )

    def at_least(self, step: Step) -> bool:
        return self.step.order >= step.order


def unfinished(
    conn: psycopg.Connection[Any], organization_id: int, role: Role
) -> MoveRecord | None:
    """The organization's unfinished move in ``role`` on this database, if any."""
    return _one(
        conn, "cells_unfinished_move", {"organization_id": organization_id, "role": role.value}
    )


def by_id(conn: psycopg.Connection[Any], move_id: uuid.UUID, role: Role) -> MoveRecord | None:
    """One side's record of ``move_id`` (finished or not)."""
    return _one(conn, "cells_move_by_id", {"move_id": move_id, "role": role.value})


def insert(
    conn: psycopg.Connection[Any],
    template: MoveRecord,
) -> MoveRecord:
    """Write ``template`` as a new row (inside the caller's transaction)."""
    params = {
        "move_id": template.move_id,
        "role": template.role.value,
        "organization_id": template.organization_id,
        "source_name": template.source_name,
        "target_name": template.target_name,
        "step": template.step.value,
        "operations": json.dumps(template.operations),
        "fingerprints": json.dumps(template.fingerprints),
    }
    found = _one(conn, "cells_insert_move", params)
    assert found is not None
    return found


def advance(
    conn: psycopg.Connection[Any],
    record: MoveRecord,
    step: Step,
    *,
    operations: dict[str, Any] | None = None,
    fingerprints: dict[str, str] | None = None,
    finishes: bool = False,
) -> MoveRecord:
    """``record`` at ``step`` (inside the caller's transaction, with the step's own work)."""
    params = {
        "move_id": record.move_id,
        "role": record.role.value,
        "step": step.value,
        "operations": json.dumps(operations or {}),
        "fingerprints": None if fingerprints is None else json.dumps(fingerprints),
        "finishes": finishes,
    }
    found = _one(conn, "cells_advance_move", params)
    assert found is not None
    return found


def forget(conn: psycopg.Connection[Any], record: MoveRecord) -> None:
    """Delete one side's record (a discarded copy's, which the re-run makes again)."""
    conn.execute(query("cells_forget_move"), {"move_id": record.move_id, "role": record.role.value})


def _one(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> MoveRecord | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query(name), params).fetchone()
    return None if row is None else MoveRecord.from_row(row)
