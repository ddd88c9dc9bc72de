"""The orchestrator stage: one operation → its next job → a runner message.

It holds the operation's row lock (``FOR UPDATE``: it waits for the short transactions of
other stages rather than skipping — a scheduler scan can hold a row it did not pick, and
skipping would strand the message that owns the lease; the lease check then turns away the
redundant messages) for one short transaction in which it decides:
nothing to do (paused, held, its class disabled, a job already in flight, a newer message owns
the stage lease, no capacity), the next job (resume an unfinished one, split one that timed
out on its last attempt, or cut a new batch from the resume cursor), or the end of the
operation. The job is dispatched with a lease and the runner message is written in the same
transaction.
"""

from __future__ import annotations

import enum
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import REGISTRY
from ..errors import TableChanged, TableNotFound
from ..jobs.ending import end_operation
from ..jobs.planning import split_job, splittable_job
from ..jobs.run import create_next_job, prepare_retry
from ..logs import logger
from ..queries import query
from ..state.records import JobRecord, OperationRecord, OperationStatus
from ..state.store import operation_ref, tables_for
from .handoff import lease_and_send, take_lease
from .messages import RUNNER
from .middleware_hold import held_by_middleware
from .runtime import messenger, transitioned
from .scheduler import jobs_in_flight, scheduler_lock_key
from .table_hold import hold_for_table
from .unknown_class import hold_if_unknown


class Decision(enum.StrEnum):
    DISPATCHED = "dispatched"
    NOT_FOUND = "not_found"
    NOT_RUNNABLE = "not_runnable"
    LEASED_ELSEWHERE = "leased_elsewhere"
    CLASS_DISABLED = "class_disabled"
    ON_HOLD = "on_hold"
    JOB_IN_FLIGHT = "job_in_flight"
    NO_CAPACITY = "no_capacity"
    HELD_BY_CHECK = "held_by_check"
    FINISHED = "finished"


def orchestrate(database: str, operation_id: Any, token: str | None = None) -> Decision:
    """Handle one orchestrator message; idempotent (see the module docstring)."""
    ref = operation_ref(database, operation_id)  # parsed once: its scope and tables
    activated: OperationRecord | None = None
    with REGISTRY.connection(database) as conn:
        with conn.transaction():
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(
                    query("pipeline_operation_for_update", operations=ref.operations_table),
                    {"id": ref.id},
                ).fetchone()
            if row is None:
                return Decision.NOT_FOUND
            operation = OperationRecord.from_row(row)
            refusal = _refusal(conn, operation, row, token)
            if refusal is not None:
                if refusal in (Decision.ON_HOLD, Decision.HELD_BY_CHECK) and messenger().ready:
                    _call_back_after_hold(conn, database, operation)
                elif refusal not in (Decision.LEASED_ELSEWHERE, Decision.JOB_IN_FLIGHT):
                    _release(conn, operation, token)
                return refusal
            if operation.status == OperationStatus.QUEUED:
                operation = activated = _activate(conn, operation)
            try:
                job = _next_job(conn, operation)
            except (TableChanged, TableNotFound) as exc:  # never run on another table
                hold_for_table(conn, operation, exc)
                if messenger().ready:
                    _call_back_after_hold(conn, database, operation)
                else:
                    _release(conn, operation, None)
                return Decision.HELD_BY_CHECK
            if job is None:
                _release(conn, operation, None)
            else:
                _dispatch(conn, database, operation, job)
        if activated is not None:
            transitioned(activated, OperationStatus.QUEUED)
    if job is None:
        end_operation(database, operation, int(REGISTRY.settings.max_attempts))
        return Decision.FINISHED
    return Decision.DISPATCHED


def _refusal(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    row: dict[str, Any],
    token: str | None,
) -> Decision | None:
    """Why this message must not start a job now, or None."""
    if operation.status not in (OperationStatus.QUEUED, OperationStatus.ACTIVE):
        return Decision.NOT_RUNNABLE
    if row["lease_live"] and operation.lease_owner not in (None, token):
        return Decision.LEASED_ELSEWHERE
    if row["class_disabled"]:  # the kill switch: the scheduler skips it until enable()
        return Decision.CLASS_DISABLED
    if row["on_hold"]:
        return Decision.ON_HOLD
    _, jobs = tables_for(operation)
    if conn.execute(query("pipeline_live_job", jobs=jobs), {"worker_id": operation.id}).fetchone():
        return Decision.JOB_IN_FLIGHT
    if hold_if_unknown(conn, operation):  # a class this worker cannot import: held, not failed
        return Decision.HELD_BY_CHECK
    # Orchestrators and the scheduler of one database count jobs in flight under one lock,
    # or concurrent orchestrators would each see a free slot and overshoot the capacity.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (scheduler_lock_key(operation.database_name),))
    if jobs_in_flight(conn) >= int(REGISTRY.settings.max_running_jobs):
        return Decision.NO_CAPACITY
    if held_by_middleware(conn, operation):  # health, and the application's middleware
        return Decision.HELD_BY_CHECK
    return None


def _activate(conn: psycopg.Connection[Any], operation: OperationRecord) -> OperationRecord:
    operations, _ = tables_for(operation)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("execution_activate_operation", operations=operations), {"id": operation.id}
        ).fetchone()
    return OperationRecord.from_row(row) if row else operation


def _next_job(conn: psycopg.Connection[Any], operation: OperationRecord) -> JobRecord | None:
    """Resume, split, or create: the job this operation runs next; None when done."""
    max_attempts = int(REGISTRY.settings.max_attempts)
    _, jobs = tables_for(operation)
    key = {"worker_id": operation.id, "max_attempts": max_attempts}
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query("execution_resumable_job", jobs=jobs), key).fetchone()
        if row is not None:
            return prepare_retry(conn, operation, JobRecord.from_row(row))
    splittable = splittable_job(conn, operation, max_attempts)
    if splittable is not None:
        halves = split_job(conn, operation, splittable)  # we hold the operation's row lock
        if halves:
            return halves[0]
    return create_next_job(conn, operation)


def _dispatch(
    conn: psycopg.Connection[Any], database: str, operation: OperationRecord, job: JobRecord
) -> None:
    _, jobs = tables_for(operation)
    # operation row (locked since the start of this transaction), then job row
    token = take_lease(conn, operation)
    seconds = float(REGISTRY.settings.lease_seconds)
    conn.execute(
        query("pipeline_dispatch_job", jobs=jobs),
        {
            "token": token,
            "seconds": seconds,
            "max_interruptions": int(REGISTRY.settings.max_interruptions),
            "partition": job.partition,
            "id": job.id,
        },
    )
    messenger().send(conn, database, RUNNER, database, str(operation.id), str(job.id), token)


def _call_back_after_hold(
    conn: psycopg.Connection[Any], database: str, operation: OperationRecord
) -> None:
    """An operation on hold gets its next orchestrator message due when the hold ends (the
    indicators are asked again then), under a lease covering the wait — rather than waiting
    for the scheduler's next tick after the hold, up to a minute later."""
    operations, _ = tables_for(operation)
    row = conn.execute(
        query("pipeline_hold_seconds_left", operations=operations),
        {"partition": operation.partition, "id": operation.id},
    ).fetchone()
    if row is None or row[0] is None:
        _release(conn, operation, None)
        return
    lease_and_send(conn, database, operation, delay=float(row[0]) + 0.05)


def _release(conn: psycopg.Connection[Any], operation: OperationRecord, token: str | None) -> None:
    operations, _ = tables_for(operation)
    conn.execute(
        query("pipeline_release_operation", operations=operations),
        {"token": token, "partition": operation.partition, "id": operation.id},
    )


def release_after_failure(database: str, operation_id: Any, token: str | None) -> None:
    """Clear the stage lease this message held, after it failed (best effort)."""
    if token is None:
        return
    ref = operation_ref(database, operation_id)
    try:
        with REGISTRY.connection(database) as conn:
            conn.execute(
                query("pipeline_release_operation_by_id", operations=ref.operations_table),
                {"token": token, "id": ref.id},
            )
    except Exception:  # the lease expires by itself; never mask the original error
        logger.exception("releasing the lease of operation %s failed", ref.id)
