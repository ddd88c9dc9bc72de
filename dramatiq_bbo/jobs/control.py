"""Steering operations by hand: pause, resume, cancel — and who asked.

A pause or cancel takes effect at the running job's next sub-batch checkpoint (the runner
re-reads the status between sub-batches); nothing is rolled back that was committed. A resume
makes the operation schedulable again and, when the pipeline is set up, wakes it at once.

Every change logs one event naming the operator (``by``: whatever the caller calls its user —
a login, a chat handle, ``"cli:alice"``), so the log answers "who paused this?".
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidTransition, OperationNotFound
from ..logs import (
    OPERATION_CANCELLED,
    OPERATION_PAUSED,
    OPERATION_RESUMED,
    event,
    operation_fields,
)
from ..operators import operator
from ..pipeline.runtime import transitioned
from ..queries import query
from ..state.records import OperationRecord, OperationStatus
from ..state.store import fetch_operation, parse_operation_id, tables_for

_ALLOWED = {
    "pause": (OperationStatus.QUEUED, OperationStatus.ACTIVE),
    "resume": (OperationStatus.PAUSED,),
    "cancel": (OperationStatus.QUEUED, OperationStatus.ACTIVE, OperationStatus.PAUSED),
}
_EVENTS = {"pause": OPERATION_PAUSED, "resume": OPERATION_RESUMED, "cancel": OPERATION_CANCELLED}


def pause(
    operation_id: Any, *, by: str | None = None, database: str | None = None
) -> OperationRecord:
    """Stop the operation at its next checkpoint until :func:`resume`."""
    return transition("pause", operation_id, database=database, by=by)


def resume(
    operation_id: Any, *, by: str | None = None, database: str | None = None
) -> OperationRecord:
    """Make a paused operation run again, from its cursor."""
    record = transition("resume", operation_id, database=database, by=by)
    from ..pipeline.wake import wake

    wake(record)
    return record


def cancel(
    operation_id: Any, *, by: str | None = None, database: str | None = None
) -> OperationRecord:
    """End the operation for good; what was committed stays committed."""
    return transition("cancel", operation_id, database=database, by=by)


def transition(
    action: str, operation_id: Any, *, database: str | None, by: str | None
) -> OperationRecord:
    """``action`` (pause, resume, cancel) under the operation's row lock, logged with ``by``;
    no wake (the caller decides: :func:`resume` wakes, a finalize runs it itself)."""
    who = operator(by)
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
        if action != "pause":
            _refuse_while_moving(conn, action, before)
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                query(f"control_{action}", operations=operations, jobs=jobs), {"id": key}
            ).fetchone()
    assert row is not None
    after = OperationRecord.from_row(row)
    event(
        _EVENTS[action],
        **operation_fields(after),
        by=who,
        previous_state=before.status.name.lower(),
        new_state=after.status.name.lower(),
    )
    transitioned(after, before.status)
    return after


def _refuse_while_moving(conn: Any, action: str, operation: OperationRecord) -> None:
    """An organization being moved here from another cell (:mod:`dramatiq_bbo.cells`) has
    inert copies of its operations here until the move ends: a resume or a cancel of one
    could leave two live copies or be undone by the move's own restore, so it is refused,
    saying how to go on. (At the source, steering is free: the move notices a changed
    operation and copies it again.)"""
    if operation.organization_id is None:
        return
    move = conn.execute(
        query("cells_move_in_progress"), {"organization_id": operation.organization_id}
    ).fetchone()
    if move is not None:
        move_id, source, target, step = move
        raise InvalidTransition(
            f"cannot {action} operation {operation.id}: organization "
            f"{operation.organization_id} is being moved here from {source!r} to {target!r} "
            f"(move {move_id}, last step here {step!r}) and this is its inert copy; run the "
            "move again to finish it (dramatiq-bbo move-organization), then steer it here"
        )
