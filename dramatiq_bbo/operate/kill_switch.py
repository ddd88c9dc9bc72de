"""The kill switch per operation class: ``disable``, ``enable``, ``disabled_classes``.

A bad deploy ships an operation class that corrupts rows: the operator needs every job of it
stopped now, on every worker, without knowing which operations exist. ``disable(name)``
writes one row in ``bbo.disabled_classes`` of the database; from then on the scheduler does
not dispatch the class's operations, the orchestrator refuses them, and a running job stops
at its next sub-batch boundary (its checkpoint committed, nothing rolled back; the job goes
back to pending, not failed). The operations keep their status (``active``), so ``enable``
simply deletes the row and wakes them: they carry on from their cursors.

The switch is keyed by the class name as stored on the operations (``job_class_name``), so a
class can be disabled before any worker has imported it, or after it was deleted from the code.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidSteering, InvalidTransition
from ..logs import CLASS_DISABLED, CLASS_ENABLED, event, logger
from ..migrations import requires_schema
from ..operators import operator
from ..queries import query
from ..settings import clean_text
from ..state.records import OperationRecord
from ..state.store import CELL_LOCAL, ORGANIZATION

#: bounds of the stored texts (the table's CHECK constraints)
MAX_CLASS_NAME_LENGTH = 255
MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class DisabledClass:
    """One disabled class: who disabled it, when, why, and how many unfinished operations of
    it wait in this database."""

    job_class_name: str
    reason: str | None
    disabled_by: str | None
    disabled_at: datetime.datetime
    unfinished_operations: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe values under stable keys (the field names; the time in ISO 8601)."""
        return {
            "job_class_name": self.job_class_name,
            "reason": self.reason,
            "disabled_by": self.disabled_by,
            "disabled_at": self.disabled_at.isoformat(),
            "unfinished_operations": self.unfinished_operations,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DisabledClass:
        return cls(
            job_class_name=row["job_class_name"],
            reason=row["reason"],
            disabled_by=row["disabled_by"],
            disabled_at=row["disabled_at"],
            unfinished_operations=int(row.get("unfinished_operations") or 0),
        )


@requires_schema
def disable(
    class_name: str,
    *,
    reason: str | None = None,
    by: str | None = None,
    database: str | None = None,
) -> DisabledClass:
    """Stop every job of ``class_name`` in ``database``: running ones at their next sub-batch
    boundary, the others are not dispatched until :func:`enable`. InvalidTransition if it is
    disabled already (the row there says by whom and why)."""
    name = _class_name(class_name)
    why = _reason(reason)
    who = operator(by)
    database = database or DEFAULT_DATABASE
    params = {"job_class_name": name, "reason": why, "disabled_by": who}
    with REGISTRY.connection(database) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query("steering_disable_class"), params).fetchone()
    if row is None:
        there = _disabled(database, name)
        raise InvalidTransition(f"class {name!r} is already disabled {_described(there)}")
    disabled = _disabled(database, name) or DisabledClass.from_row(row)
    event(
        CLASS_DISABLED,
        job_class_name=name,
        reason=why,
        by=who,
        database_name=database,
        unfinished_operations=disabled.unfinished_operations,
    )
    return disabled


@requires_schema
def enable(class_name: str, *, by: str | None = None, database: str | None = None) -> DisabledClass:
    """Let ``class_name`` run again: its operations carry on from their cursors (woken at once
    when the pipeline is set up in this process, else at the scheduler's next pass). Returns
    the switch that was removed; InvalidTransition if the class was not disabled."""
    name = _class_name(class_name)
    who = operator(by)
    database = database or DEFAULT_DATABASE
    with REGISTRY.connection(database) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query("steering_enable_class"), {"job_class_name": name}).fetchone()
    if row is None:
        raise InvalidTransition(f"class {name!r} is not disabled in database {database!r}")
    removed = DisabledClass.from_row(row)
    try:
        woken = _wake_class(database, name)
    except Exception:  # enabled all the same: the scheduler's next pass finds them
        logger.exception("waking the operations of %s after enable failed", name)
        woken = 0
    event(
        CLASS_ENABLED,
        job_class_name=name,
        by=who,
        database_name=database,
        disabled_by=removed.disabled_by,
        disabled_at=removed.disabled_at.isoformat(),
        woken_operations=woken,
    )
    return removed


@requires_schema
def disabled_classes(*, database: str | None = None) -> list[DisabledClass]:
    """The classes disabled in ``database``, by name."""
    with REGISTRY.connection(database or DEFAULT_DATABASE) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("steering_disabled_classes"), {"job_class_name": None})
            return [DisabledClass.from_row(row) for row in rows.fetchall()]


def _disabled(database: str, name: str) -> DisabledClass | None:
    with REGISTRY.connection(database) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query("steering_disabled_classes"), {"job_class_name": name}).fetchone()
    return None if row is None else DisabledClass.from_row(row)


def _described(disabled: DisabledClass | None) -> str:
    if disabled is None:  # enabled again in between: say so rather than guess
        return "(and was enabled again meanwhile)"
    who = f" by {disabled.disabled_by}" if disabled.disabled_by else ""
    why = f": {disabled.reason}" if disabled.reason else ""
    return f"since {disabled.disabled_at.isoformat(timespec='seconds')}{who}{why}"


def _wake_class(database: str, name: str) -> int:
    """Wake the class's runnable operations (up to the capacity): the scheduler would find
    them at its next pass, a wake starts them now. How many messages were sent."""
    from ..pipeline.runtime import messenger
    from ..pipeline.wake import wake

    if not messenger().ready:
        return 0
    limit = int(REGISTRY.settings.max_running_jobs)
    woken = 0
    for scope in (ORGANIZATION, CELL_LOCAL):
        params = {"job_class_name": name, "limit": limit}
        with REGISTRY.connection(database) as conn, conn.cursor(row_factory=dict_row) as cur:
            statement = query("steering_runnable_of_class", operations=scope.operations_table)
            rows = cur.execute(statement, params).fetchall()
        woken += sum(wake(OperationRecord.from_row(row)) for row in rows)
    return woken


def _class_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or not clean_text(value):
        raise InvalidSteering(f"class name must be non-empty text, got {value!r}")
    if len(value) > MAX_CLASS_NAME_LENGTH:
        raise InvalidSteering(
            f"class name must be at most {MAX_CLASS_NAME_LENGTH} characters, got {len(value)}"
        )
    return value


def _reason(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not clean_text(value):
        raise InvalidSteering(f"reason must be text without NUL, got {value!r}")
    if len(value) > MAX_REASON_LENGTH:
        raise InvalidSteering(
            f"reason must be at most {MAX_REASON_LENGTH} characters, got {len(value)}"
        )
    return value or None
