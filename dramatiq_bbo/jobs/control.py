"""Steering operations by hand: pause, resume, cancel.

A pause or cancel takes effect at the running job's next sub-batch checkpoint (the runner
re-reads the status between sub-batches); nothing is rolled back that was committed. A resume
makes the operation schedulable again and, when the pipeline is set up, wakes it at once.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidTransition, OperationNotFound
from ..pipeline.runtime import transitioned
from ..queries import query
from ..state.records import OperationRecord, OperationStatus
from ..state.store import fetch_operation, parse_operation_id, tables_for

_ALLOWED = {
    "pause": (OperationStatus.QUEUED, OperationStatus.ACTIVE),
    "resume": (OperationStatus.PAUSED,),
    "cancel": (OperationStatus.QUEUED, OperationStatus.ACTIVE, OperationStatus.PAUSED),
}


def pause(operation_id: Any, *, database: str | None = None) -> OperationRecord:
    """Stop the operation at its next checkpoint until :func:`resume`."""
    return _transition("pause", operation_id, database)


def resume(operation_id: Any, *, database: str | None = None) -> OperationRecord:
    """Make a paused operation run again, from its cursor."""
    record = _transition("resume", operation_id, database)
    from ..pipeline.wake import wake

    wake(record)
    return record


def cancel(operation_id: Any, *, database: str | None = None) -> OperationRecord:
    """End the operation for good; what was committed stays committed."""
    return _transition("cancel", operation_id, database)


def _transition(action: str, operation_id: Any, database: str | None) -> OperationRecord:
    key = parse_operation_id(operation_id)
    name = database or DEFAULT_DATABASE
    operations, jobs = tables_for(key)
    with REGISTRY.connection(name) as conn, conn.transaction():
        before = fetch_operation(conn, key, for_update=True)
        if before is None:
            raise OperationNotFound(f"no operation {str(key)!r} in database {name!r}")
        if before.status not in _ALLOWED[action]:
            raise InvalidTransition(
                f"cannot {action} operation {key}: it is {before.status.name.lower()} "
                f"({action} applies to {', '.join(s.name.lower() for s in _ALLOWED[action])})"
            )
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                query(f"control_{action}", operations=operations, jobs=jobs), {"id": key}
            ).fetchone()
    assert row is not None
    after = OperationRecord.from_row(row)
    transitioned(after, before.status)
    return after
