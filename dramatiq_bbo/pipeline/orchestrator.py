"""The orchestrator stage: one operation → its next job → a runner message.

It holds the operation's row lock (``FOR UPDATE``: it waits for the short transactions of
other stages rather than skipping — a scheduler scan can hold a row it did not pick, and
skipping would strand the message that owns the lease; the lease check then turns away the
redundant messages) for one short transaction in which it decides:
nothing to do (paused, held, its class disabled, a job already in flight, its organization
read-only — then held, :mod:`dramatiq_bbo.read_only.check` —, a newer message owns the stage
lease, no capacity), the next job (resume an unfinished one, split one that timed
out on its last attempt, or cut a new batch from the resume cursor), or the end of the
operation. The job is dispatched with a lease and the runner message is written in the same
transaction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
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
from ..read_only.check import hold_if_read_only
from ..state.records import JobRecord, OperationRecord, OperationStatus
from ..state.store import operation_ref, tables_for
from .handoff import lease_and_send, take_lease
from .messages import RUNNER
from .middleware_hold import held_by_middleware
from .picking import pick_schedulable
from .refill import free_slots
from .runtime import messenger, transitioned
from .table_hold import hold_for_table
from .unknown_class import hold_if_unknown
from .wake import register


class Decision(enum.StrEnum):
    DISPATCHED = "dispatched"
    NOT_FOUND = "not_found"
    NOT_RUNNABLE = "not_runnable"
    LEASED_ELSEWHERE = "leased_elsewhere"
    CLASS_DISABLED = "class_disabled"
    ON_HOLD = "on_hold"
    JOB_IN_FLIGHT = "job_in_flight"
    NO_CAPACITY = "no_capacity"
    YIELDED = "yielded"
    HELD_BY_CHECK = "held_by_check"
    FINISHED = "finished"


@dataclass
class Started:
    """What :func:`decide` did in its transaction; :meth:`after_commit` does the rest."""

    decision: Decision
    operation: OperationRecord | None = None
    activated: OperationRecord | None = None
    #: the job dispatched, and the stage lease its runner holds
    job: JobRecord | None = None
    token: str | None = None
    #: what the operations waiting before a woken one were started with (:func:`_slot_left`)
    others: list[Started] = field(default_factory=list)

    def after_commit(self, database: str) -> Decision:
        """Once committed: the queued → active transition told, a finished range ended."""
        for other in self.others:
            other.after_commit(database)
        if self.activated is not None:
            transitioned(self.activated, OperationStatus.QUEUED)
        if self.decision == Decision.FINISHED and self.operation is not None:
            end_operation(database, self.operation, int(REGISTRY.settings.max_attempts))
        return self.decision


def orchestrate(
    database: str, operation_id: Any, token: str | None = None, wake: bool = False
) -> Decision:
    """Handle one orchestrator message; idempotent (see the module docstring). ``wake``: sent
    by a wake-up (an enqueue in the caller's transaction, a resume), which takes a free slot
    only when no operation is waiting for one (:mod:`.refill`)."""
    with REGISTRY.connection(database) as conn:
        with conn.transaction():
            started = decide(conn, database, operation_id, token, wake=wake)
        return started.after_commit(database)


def decide(
    conn: psycopg.Connection[Any],
    database: str,
    operation_id: Any,
    token: str | None,
    *,
    wake: bool = False,
    send: bool = True,
    gate: bool = False,
) -> Started:
    """The orchestrator's decision in the caller's transaction: lock the operation row, check
    it may start a job now, then dispatch its next job (or finish it). Also how an enqueue
    starts its operation (one hop) and how a job's end goes on with its operation. ``send``:
    write the runner message (False: the caller runs the job itself, :mod:`.runner`).
    ``gate``: outside a worker (an enqueue), the middleware's ``before_job`` is left to the
    runner, in the worker whose middleware governs the job (the message says so)."""
    ref = operation_ref(database, operation_id)  # parsed once: its scope and tables
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("pipeline_operation_for_update", operations=ref.operations_table),
            {"id": ref.id},
        ).fetchone()
    if row is None:
        return Started(Decision.NOT_FOUND)
    operation = OperationRecord.from_row(row)
    others: list[Started] = []
    refusal = _refusal(conn, operation, row, token, wake, others, ask=not gate)
    if refusal is not None:
        if refusal in (Decision.ON_HOLD, Decision.HELD_BY_CHECK) and messenger().ready:
            call_back_after_hold(conn, database, operation)
        elif refusal not in (Decision.LEASED_ELSEWHERE, Decision.JOB_IN_FLIGHT):
            release(conn, operation, token)
        return Started(refusal, operation, others=others)
    activated = None
    if operation.status == OperationStatus.QUEUED:
        operation = activated = _activate(conn, operation)
    try:
        job = _next_job(conn, operation)
    except (TableChanged, TableNotFound) as exc:  # never run on another table
        hold_for_table(conn, operation, exc)
        if messenger().ready:
            call_back_after_hold(conn, database, operation)
        else:
            release(conn, operation, None)
        return Started(Decision.HELD_BY_CHECK, operation, activated, others=others)
    if job is None:
        release(conn, operation, None)
        return Started(Decision.FINISHED, operation, activated, others=others)
    token = _dispatch(conn, database, operation, job, send=send, gate=gate)
    return Started(Decision.DISPATCHED, operation, activated, job, token, others)


def _refusal(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    row: dict[str, Any],
    token: str | None,
    wake: bool,
    others: list[Started],
    *,
    ask: bool = True,
) -> Decision | None:
    """Why this message must not start a job now, or None (``ask``: the middleware too)."""
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
    if hold_if_read_only(conn, operation):  # its organization is read-only: held, asked again
        return Decision.HELD_BY_CHECK
    # Orchestrators and the scheduler of one database count jobs in flight under one lock,
    # or concurrent orchestrators would each see a free slot and overshoot the capacity.
    # No slot: released to the pool, where the next job to end finds it (:mod:`.refill`).
    free = free_slots(conn, operation.database_name)
    if free <= 0:
        return Decision.NO_CAPACITY
    if wake and not _slot_left(conn, operation, free, others, not ask):
        return Decision.YIELDED  # the operations already waiting took the free slots
    if ask and held_by_middleware(conn, operation):  # health, and the application's middleware
        return Decision.HELD_BY_CHECK
    return None


def dispatch_waiting(
    conn: psycopg.Connection[Any],
    database: str,
    free: int,
    *,
    exclude: Any = None,
    gate: bool = False,
) -> list[Started]:
    """Capacity refilled at once: up to ``free`` waiting operations, in the one dispatch order
    (:func:`~.picking.pick_schedulable`), each get their next job dispatched here, runner
    message included — what their orchestrator would decide (:func:`decide`, same gates),
    without its message hop, so the slot counts as taken the moment this commits. The caller
    holds the capacity lock (:func:`~.refill.free_slots`) and calls each ``after_commit``.
    ``exclude``: the caller's own operation (left out before the limit, so it never hides a
    waiting one). ``gate``: outside a worker (see :func:`decide`)."""
    if free <= 0 or not messenger().ready:  # no message can be sent: the pass covers it
        return []
    started: list[Started] = []
    for operation in pick_schedulable(conn, database, free, exclude=exclude):
        try:  # one operation's failure (a middleware's exception) must not undo the caller's
            with conn.transaction():
                started.append(decide(conn, database, operation.id, None, gate=gate))
        except Exception:
            logger.exception("dispatching waiting operation %s failed", operation.id)
    return started


def first_in_line(
    conn: psycopg.Connection[Any], database: str, operation_id: Any
) -> tuple[bool, list[Started]]:
    """Take the capacity lock, refill the free slots for the operations waiting; whether a
    slot is left for ``operation_id`` (False also without any free slot), and what the
    refill started (call each ``after_commit`` once committed)."""
    free = free_slots(conn, database)
    started = dispatch_waiting(conn, database, free, exclude=operation_id)
    return sum(s.decision == Decision.DISPATCHED for s in started) < free, started


def _slot_left(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    free: int,
    others: list[Started],
    gate: bool,
) -> bool:
    """A woken operation's turn: the waiting ones first; True when a slot is left for it.
    What they started goes to ``others`` (told after commit)."""
    database = operation.database_name
    started = dispatch_waiting(conn, database, free, exclude=operation.id, gate=gate)
    others.extend(started)
    return sum(s.decision == Decision.DISPATCHED for s in started) < free


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
    conn: psycopg.Connection[Any],
    database: str,
    operation: OperationRecord,
    job: JobRecord,
    *,
    send: bool = True,
    gate: bool = False,
) -> str:
    _, jobs = tables_for(operation)
    # operation row (locked since the start of this transaction), then job row
    token = take_lease(conn, operation)
    assert token is not None  # Take.ANY: always taken
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
    if send:
        args = (database, str(operation.id), str(job.id), token) + ((True,) if gate else ())
        messenger().send(conn, database, RUNNER, *args)
    return token


def call_back_after_hold(
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
        release(conn, operation, None)
        return
    lease_and_send(conn, database, operation, delay=float(row[0]) + 0.05)


def release(conn: psycopg.Connection[Any], operation: OperationRecord, token: str | None) -> None:
    """Clear the operation's stage lease (held by ``token``; any when None): it joins the pool
    of schedulable operations."""
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


register(decide)  # an enqueue starts its operation with this decision (:mod:`.wake`)
