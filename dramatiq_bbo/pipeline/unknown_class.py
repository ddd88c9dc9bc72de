"""An operation whose class this worker cannot import: held with a visible reason, not failed.

Workers of one queue need not all import the same modules (a deploy rolls out, a service
declares its own operations). A worker that meets an operation of a class it does not know
holds it (``on_hold_until`` = now + the ``unknown_class_hold_seconds`` setting, ``hold_reason``
= ``"class X is not importable in this worker"``, both shown by ``bbo.get_operation``) and
logs :data:`UNKNOWN_CLASS_HOLD` once per process and class. Nothing is failed and no attempt
is spent. When the hold expires the operation's next orchestrator message (due then) or the
scheduler's next tick hands it out again; a worker that knows the class clears the reason
and runs it, one that does not holds it again.

Two places meet the class: the orchestrator, before it creates or resumes a job
(:func:`hold_if_unknown`, in its transaction with the operation row locked), and the runner,
when a job dispatched by a worker that knows the class reaches one that does not
(:func:`hold_before_run`: the job is given back undispatched and an orchestrator message
sees the hold).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from ..db import REGISTRY
from ..errors import UnknownOperationClass
from ..logs import UNKNOWN_CLASS_HOLD, event, operation_fields
from ..operation import resolve
from ..queries import query
from ..state.records import OperationRecord
from ..state.store import fetch_operation, hold_operation, tables_for
from .handoff import lease_and_send
from .runtime import messenger

_logged: set[str] = set()
_logged_lock = threading.Lock()


def hold_reason(class_name: str) -> str:
    return f"class {class_name} is not importable in this worker"


def importable(class_name: str) -> bool:
    try:
        resolve(class_name)
    except UnknownOperationClass:
        return False
    return True


def hold_if_unknown(conn: psycopg.Connection[Any], operation: OperationRecord) -> bool:
    """Orchestrator hook: True (start nothing) when this worker cannot import the class; the
    operation is then held on ``conn``. With a known class, an expired hold of this kind is
    cleared so ``get_operation`` stops showing a reason that no longer holds."""
    name = operation.job_class_name
    operations, _ = tables_for(operation)
    where = {"partition": operation.partition, "id": operation.id, "reason": hold_reason(name)}
    if importable(name):
        if operation.hold_reason == where["reason"]:
            conn.execute(query("unknown_class_release", operations=operations), where)
        return False
    _hold(conn, operation)
    return True


def hold_before_run(database: str, operation: OperationRecord, job_id: Any) -> bool:
    """Runner hook: True (do not run) when this worker cannot import the class. The job goes
    back to pending without a lease (no attempt spent), the operation is held, and an
    orchestrator message is written at once under a fresh stage lease: it sees the hold and
    calls the operation back when the hold ends. A stale message (the job is no longer
    dispatched: running elsewhere, or done) changes nothing."""
    if importable(operation.job_class_name):
        return False
    with REGISTRY.connection(database) as conn, conn.transaction():
        locked = fetch_operation(conn, operation.id, for_update=True)
        if locked is not None and locked.unfinished:
            give_back_if_unknown(conn, database, locked, job_id)
    return True


def give_back_if_unknown(
    conn: psycopg.Connection[Any], database: str, locked: OperationRecord, job_id: Any
) -> bool:
    """:func:`hold_before_run` in the caller's transaction, the operation row locked (a
    runner's claim asks it so before claiming): True when the class is unknown here."""
    if importable(locked.job_class_name):
        return False
    operations, _ = tables_for(locked)
    if not undispatch(conn, locked, job_id):  # a stale message: the job is not waiting for us
        return True
    _hold(conn, locked)
    where = {"partition": locked.partition, "id": locked.id}
    if not messenger().ready:  # no broker here: the scheduler hands it out after the hold
        conn.execute(
            query("pipeline_release_operation", operations=operations), {**where, "token": None}
        )
        return True
    lease_and_send(conn, database, locked)
    return True


def undispatch(conn: psycopg.Connection[Any], locked: OperationRecord, job_id: Any) -> bool:
    """Give back a job dispatched to this runner, unclaimed: pending, no lease, attempts
    untouched. False when it was not waiting for a runner (a stale message)."""
    _, jobs = tables_for(locked)
    given_back = conn.execute(
        query("unknown_class_undispatch_job", jobs=jobs), {"worker_id": locked.id, "id": job_id}
    ).fetchone()
    return given_back is not None


def _hold(conn: psycopg.Connection[Any], operation: OperationRecord) -> None:
    name = operation.job_class_name
    seconds = float(REGISTRY.settings.unknown_class_hold_seconds)
    until = hold_operation(conn, operation, seconds=seconds, reason=hold_reason(name))
    with _logged_lock:
        first = name not in _logged
        _logged.add(name)
    if first:
        event(
            UNKNOWN_CLASS_HOLD,
            level=logging.WARNING,
            **operation_fields(operation),
            on_hold_until=until.isoformat() if until else None,
            hold_seconds=seconds,
            reason=hold_reason(name),
            hint=(
                "import the module that defines this class in the worker app (it is logged "
                "once per process and class; the operation resumes on a worker that knows it)"
            ),
        )
