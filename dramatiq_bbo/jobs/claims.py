"""Claiming a job to run: one more attempt under a lease, or a takeover of an interrupted one.

Every claim runs in one short transaction that locks the **operation row first**, then writes
the job row: the one lock order of the library (docs/pipeline.md, "Lock order"), so a claim
never deadlocks with an orchestrator, which locks the operation row and then dispatches a job.
Holding the operation row also makes two rules hold whoever claims (a pipeline runner,
``run_to_completion``, a direct ``run_job``):

- one job per operation: a job is not claimed while another job of its operation runs under
  a live lease;
- a stage message gives way: a runner message (``stage_token`` given) does not claim while
  another stage holds the operation's live stage lease (``run_to_completion`` took it over).

A running job whose lease expired is taken over: that counts an interruption, not an attempt
(up to ``max_interruptions``). Also here: a timed-out job's sub-batch shrunk before it is
claimed again (``prepare_retry``), and the job a lease owner already holds (``recover_claimed``).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import dict_row

from ..db import REGISTRY
from ..errors import InvalidTransition, OperationNotFound
from ..queries import query
from ..state.records import JobRecord, JobStatus, OperationRecord
from ..state.store import parse_operation_id, tables_for
from ..walk.statements import eager, one_transaction, pipelined, rollback
from . import retries

Cur = psycopg.Cursor[Any]
#: what a claim sent: the operation (read, or its cursor), the table oid, the job before and
#: as claimed
_Sent = tuple[Any, Cur, Cur, Cur]


def new_owner() -> str:
    """A lease owner unique to this run of a job."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def claim_params(
    operation_id: Any, job_id: Any, owner: str, stage_token: str | None = None
) -> dict[str, Any]:
    """Parameters of ``execution_claim_job`` and ``execution_touch_claimed_operation``."""
    settings = REGISTRY.settings
    return {
        "worker_id": operation_id,
        "id": job_id,
        "lease_owner": owner,
        "lease_seconds": float(settings.lease_seconds),
        "max_interruptions": int(settings.max_interruptions),
        "stage_token": stage_token,
    }


class Claimed(NamedTuple):
    """What a claim read and wrote: the operation (row-locked while the claim ran), the job's
    status before it, the job as claimed, and the oid its operation's stored table name
    names now (None: no such table any more), read in the same transaction: the table's
    identity, checked without a round trip of its own (:func:`~.instance.build_operation`)."""

    operation: OperationRecord
    previous: JobStatus
    job: JobRecord
    table_oid: int | None


#: Asked in the claim's transaction, the operation row locked, before the job is claimed
#: (whatever the operation's status: the gate decides what it means):
#: True gives the claim up (:class:`ClaimGivenUp`); what the gate wrote on the connection
#: (a hold, the job given back) commits all the same.
ClaimGate = Callable[[psycopg.Connection[Any], OperationRecord], bool]


class ClaimGivenUp(Exception):
    """The claim's gate objected: nothing was claimed (not an error of the job's)."""


def claim(
    conn: psycopg.Connection[Any],
    name: str,
    operation_id: Any,
    job_id: Any,
    owner: str,
    stage_token: str | None = None,
    gate: ClaimGate | None = None,
) -> Claimed:
    """Lock and read the operation, then claim its job, in one transaction and one round
    trip (the claim and the operation's ``last_run_at`` apply only if the operation exists).

    With a ``gate``, the operation is read first and the gate asked before the job is
    claimed: two round trips, still one transaction (a runner that knows nothing of the
    operation yet needs no read of its own, nor a transaction of its own for the gate).
    Prepared statements, generic plans: the claim runs for every job, and planning its
    statements on the partitioned state tables costs more than running them."""
    key = parse_operation_id(operation_id)
    params = claim_params(key, job_id, owner, stage_token)
    sent: _Sent | None
    if gate is None:
        sent = _send_at_once(conn, key, params)
    else:
        sent = _send_gated(conn, key, params, gate, name)
    if sent is None:
        raise ClaimGivenUp(f"job {job_id!s} of operation {operation_id!s} was not claimed")
    found, oid, before, claimed = sent
    operation = found if isinstance(found, OperationRecord) else _operation(found, key, name)
    previous, job = before.fetchone(), claimed.fetchone()
    if previous is None:
        raise InvalidTransition(f"operation {operation.id} has no job {job_id!s}")
    if job is None and previous["lease_owner"] == owner:
        job = previous  # claimed by an earlier try whose answer was lost with its connection
    if job is None:
        raise InvalidTransition(_refusal(operation, previous, job_id, stage_token))
    table = oid.fetchone()
    return Claimed(
        operation,
        JobStatus(previous["status"]),
        JobRecord.from_row(job),
        None if table is None else table["oid"],
    )


#: the claim's statements, in the order they are sent
_READ = ("execution_lock_operation", "execution_operation_table_oid")
_CLAIM = ("execution_job_by_id", "execution_claim_job", "execution_touch_claimed_operation")


def _send(
    conn: psycopg.Connection[Any], key: Any, names: tuple[str, ...], params: Any
) -> list[Cur]:
    """Queue the named statements of the claim (prepared, rows as dicts)."""
    operations, jobs = tables_for(key)
    return [_queue(conn, query(name, operations=operations, jobs=jobs), params) for name in names]


def _send_at_once(conn: psycopg.Connection[Any], key: Any, params: dict[str, Any]) -> _Sent:
    """The whole claim in one round trip, its ``COMMIT`` included."""
    with one_transaction(conn, generic_plans=True):
        found, oid = _send(conn, key, _READ, params)
        before, claimed, _ = _send(conn, key, _CLAIM, params)
    return found, oid, before, claimed


def _send_gated(
    conn: psycopg.Connection[Any], key: Any, params: dict[str, Any], gate: ClaimGate, name: str
) -> _Sent | None:
    """The claim in two round trips: the operation locked and read, the gate asked (outside
    any pipeline: the gate may be the application's middleware), then the job claimed and
    the transaction committed. None when the gate objected (what it wrote commits)."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.autocommit and idle, "a gated claim begins and commits its own transaction"
    try:
        with pipelined(conn):
            conn.execute("BEGIN")
            conn.execute(query("pipeline_generic_plans"), prepare=eager(conn))
            found, oid = _send(conn, key, _READ, params)
        operation = _operation(found, key, name)
        if gate(conn, operation):
            conn.execute("COMMIT")
            return None
        with pipelined(conn):
            before, claimed, _ = _send(conn, key, _CLAIM, params)
            conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return operation, oid, before, claimed


def _queue(conn: psycopg.Connection[Any], statement: Any, params: dict[str, Any]) -> Cur:
    """One prepared statement of the claim, queued in its pipeline (rows as dicts)."""
    cursor = conn.cursor(row_factory=dict_row)
    return cursor.execute(statement, params, prepare=eager(conn))


def _operation(found: Cur, operation_id: Any, name: str) -> OperationRecord:
    row = found.fetchone()
    if row is None:
        where = f" in database {name!r}" if name else ""
        raise OperationNotFound(f"no operation {operation_id!s}{where}")
    return OperationRecord.from_row(row)


def _refusal(
    operation: OperationRecord, previous: dict[str, Any], job_id: Any, stage_token: str | None
) -> str:
    status = JobStatus(previous["status"])
    text = f"job {job_id!s} of operation {operation.id} cannot run: it is {status.name.lower()}"
    if status == JobStatus.RUNNING:
        return text + " under a live lease"
    if stage_token is not None and operation.lease_owner not in (None, stage_token):
        return text + ", and another stage holds the operation (its stage lease moved on)"
    return text + ", and another job of the operation runs under a live lease"


def recover_claimed(
    conn: psycopg.Connection[Any], operation: OperationRecord, owner: str
) -> JobRecord | None:
    """The job ``owner`` holds, if an ``end_and_next`` (:mod:`dramatiq_bbo.jobs.creation`)
    whose answer was lost with its connection committed it (so the runner goes on with it
    instead of waiting out its lease)."""
    _, jobs = tables_for(operation)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("execution_job_by_lease_owner", jobs=jobs),
            {"worker_id": operation.id, "lease_owner": owner},
        ).fetchone()
    return JobRecord.from_row(row) if row is not None else None


def prepare_retry(
    conn: psycopg.Connection[Any], operation: OperationRecord, job: JobRecord
) -> JobRecord:
    """Before re-running a job whose last attempt timed out: shrink its sub-batch size."""
    if job.status != JobStatus.FAILED or not retries.timed_out(job):
        return job
    size = retries.shrunk_sub_batch_size(job.sub_batch_size, operation.sub_batch_size)
    if size == job.sub_batch_size:
        return job
    _, jobs = tables_for(operation)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("execution_set_job_sub_batch_size", jobs=jobs),
            {"sub_batch_size": size, "partition": job.partition, "id": job.id},
        ).fetchone()
    return JobRecord.from_row(row) if row else job
