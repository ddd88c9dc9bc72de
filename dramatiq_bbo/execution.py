"""Running jobs: creating the next one from the resume cursor, running one under a lease, and
``run_to_completion()`` — the synchronous loop that tests, finalizers and the CLI use.

The dramatiq runner actor calls the same :func:`create_next_job` and :func:`run_job`, so a
job behaves the same whoever runs it.

Connections. Bookkeeping (claim, finish, job creation) runs on pooled autocommit connections
(or the one a caller running many jobs passes in) in short transactions of its own, each sent
in as few round trips as it can (:mod:`dramatiq_bbo.statements`): the claim reads the operation
and claims the job in one; ``run_to_completion()`` creates a job already claimed. The
sub-batches run on the peewee database's connection for the running thread (see
:mod:`dramatiq_bbo.batching`). Because a failed ``perform()`` leaves the sub-batch generator
suspended with its transaction open and the job row locked, the runner closes it (rolling the
sub-batch back) before any bookkeeping on another connection, which would otherwise wait on
that lock forever. A lost connection is an interruption, not a failed attempt: the job goes
back to pending at its checkpoint once Postgres answers (:mod:`dramatiq_bbo.reconnect`).

Leases. Claiming a job stamps it with a unique lease owner and an expiry renewed by every
sub-batch checkpoint. A job left ``running`` by a killed process is taken over once its lease
has expired; the old runner, if it was merely slow, finds another owner on the job row at its
next sub-batch and stops (:class:`~dramatiq_bbo.errors.LeaseLost`).

How a run ended (:class:`JobOutcome`, the events logged) is :mod:`dramatiq_bbo.outcomes`.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import retries
from .batching import Keyset, SubBatchEngine
from .bookkeeping import bookkeeping, finish_job
from .db import DEFAULT_DATABASE, REGISTRY
from .errors import (
    IncompleteJob,
    InvalidTransition,
    LeaseLost,
    OperationNotFound,
)
from .keyset import next_batch_bounds
from .observability.logs import logger
from .operation import BaseOperation, resolve
from .outcomes import (
    JobOutcome,
    as_timeout,
    class_name,
    exception_message,
    job_event,
    worker_event,
)
from .queries import query
from .reconnect import connection_lost, is_connection_error, retrying
from .records import JobRecord, JobStatus, OperationRecord
from .statements import pipelined
from .store import fetch_operation, parse_operation_id, tables_for
from .tables import table_info, table_model

__all__ = [
    "JobOutcome",
    "StopCheck",
    "build_operation",
    "create_next_job",
    "prepare_retry",
    "run_job",
    "run_next_job",
    "run_to_completion",
    "worker_event",
]

StopCheck = Callable[[], str | None]


# -- building an operation instance ---------------------------------------------------------
def build_operation(
    operation: OperationRecord, job: JobRecord | None = None
) -> tuple[BaseOperation, Keyset]:
    """The author's class instantiated for ``operation`` (arguments, table model, records)
    and its keyset. Reflection happens here, outside any transaction."""
    cls = resolve(operation.job_class_name)
    info = table_info(operation.database_name, operation.table_name)
    model = table_model(operation.database_name, info, operation_class=cls)
    instance = cls(operation.job_arguments, table=model)
    instance.operation = operation
    if job is not None:
        instance.job = job
    return instance, Keyset.for_operation(instance, info, operation.cursor_columns)


# -- creating jobs --------------------------------------------------------------------------
def create_next_job(
    conn: psycopg.Connection[Any], operation: OperationRecord, *, claim_for: str | None = None
) -> JobRecord | None:
    """Hand the next batch of the operation's range to a new pending job, and advance the
    operation's ``next_cursor`` past it, in one transaction under the operation's row lock
    (so two creators never hand out one range twice). None when the range is exhausted.

    ``claim_for``: a lease owner that claims the new job in the same transaction, as
    :func:`run_job` would (a caller about to run it saves a transaction of its own).

    Three round trips (pipelined): lock the operation row, probe the range, then insert the
    job, advance the cursor and commit (four with ``claim_for``)."""
    _, keyset = build_operation(operation)
    operations, jobs = tables_for(operation)
    settings = REGISTRY.settings
    with pipelined(conn), conn.transaction():
        conn.execute(
            query("batching_sub_batch_guards"),
            {
                "statement_timeout": f"{int(settings.statement_timeout_ms)}ms",
                "lock_timeout": f"{int(settings.lock_timeout_ms)}ms",
            },
        )
        locked = fetch_operation(conn, operation.id, for_update=True)
        if locked is None:
            raise OperationNotFound(f"operation {operation.id} disappeared")
        bounds = next_batch_bounds(
            conn,
            keyset,
            min_cursor=locked.min_cursor,
            max_cursor=locked.max_cursor,
            next_cursor=locked.next_cursor,
            batch_size=locked.batch_size,
        )
        if bounds is None:
            return None
        scope = "organization" if locked.organization_scoped else "cell_local"
        inserted = conn.cursor(row_factory=dict_row).execute(
            query(f"execution_insert_job_{scope}", jobs=jobs),
            {
                "partition": locked.partition,
                "organization_id": locked.organization_id,
                "worker_id": locked.id,
                "worker_partition": locked.partition,
                "batch_size": locked.batch_size,
                "sub_batch_size": locked.sub_batch_size,
                "pause_ms": locked.pause_ms,
                "min_cursor": json.dumps(bounds[0]),
                "max_cursor": json.dumps(bounds[1]),
            },
        )
        conn.execute(
            query("execution_advance_operation", operations=operations),
            {"next_cursor": json.dumps(bounds[1]), "partition": locked.partition, "id": locked.id},
        )
        if claim_for is not None:
            inserted = _claim_new(conn, locked, inserted.fetchone(), claim_for, settings)
    row = inserted.fetchone()
    assert row is not None
    return JobRecord.from_row(row)


def _claim_new(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    new: dict[str, Any] | None,
    owner: str,
    settings: Any,
) -> psycopg.Cursor[Any]:
    """Claim a job just created in this transaction (see ``execution_claim_job``)."""
    assert new is not None
    operations, jobs = tables_for(operation)
    params = {
        "worker_id": operation.id,
        "id": new["id"],
        "lease_owner": owner,
        "lease_seconds": float(settings.lease_seconds),
    }
    claimed = conn.cursor(row_factory=dict_row).execute(
        query("execution_claim_job", operations=operations, jobs=jobs), params
    )
    touch = query("execution_touch_claimed_operation", operations=operations, jobs=jobs)
    conn.execute(touch, params)
    return claimed


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


# -- running one job ------------------------------------------------------------------------
def run_job(
    operation_id: Any,
    job_id: Any,
    *,
    stop_check: StopCheck | None = None,
    database: str | None = None,
    connection: psycopg.Connection[Any] | None = None,
) -> JobOutcome:
    """Run one job of an operation: claim it (one more attempt, under a lease), run the
    author's ``perform()`` over it, and record how it ended (see :class:`JobOutcome`).

    ``connection``: an autocommit connection to ``database`` for the claim and the end of the
    job (a caller running many jobs keeps one), instead of one from the pool each time."""
    name = database or DEFAULT_DATABASE
    owner = _new_owner()

    def claim() -> tuple[OperationRecord, JobStatus, JobRecord]:
        with bookkeeping(name, connection) as conn:
            return _claim(conn, name, operation_id, job_id, owner)

    operation, previous, job = retrying(f"claiming job {job_id!s}", claim)
    return _run_claimed(name, connection, operation, job, owner, previous, stop_check)


def run_next_job(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    *,
    stop_check: StopCheck | None = None,
    database: str | None = None,
) -> JobOutcome | None:
    """Create the operation's next job claimed by this runner (one transaction, see
    :func:`create_next_job`) and run it like :func:`run_job`, with ``conn`` for the
    bookkeeping; None when the operation's range is exhausted."""
    owner = _new_owner()
    job = create_next_job(conn, operation, claim_for=owner)
    if job is None:
        return None
    name = database or DEFAULT_DATABASE
    return _run_claimed(name, conn, operation, job, owner, JobStatus.PENDING, stop_check)


def _new_owner() -> str:
    """A lease owner unique to this run of a job."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def _run_claimed(
    name: str,
    connection: psycopg.Connection[Any] | None,
    operation: OperationRecord,
    job: JobRecord,
    owner: str,
    previous: JobStatus,
    stop_check: StopCheck | None,
) -> JobOutcome:
    """Run ``perform()`` over a job this runner claimed, and record how it ended."""
    job_event(operation, job, previous)
    started = time.monotonic()
    engine: SubBatchEngine | None = None
    end = functools.partial(_end, name, connection, operation, job, owner)
    try:
        instance, keyset = build_operation(operation, job)
        engine = SubBatchEngine(
            keyset=keyset,
            operation=operation,
            job=job,
            lease_owner=owner,
            settings=REGISTRY.settings,
            stop_check=stop_check,
        )
        instance._engine = engine
        instance.perform()
        _close(engine)
        if engine.started and not engine.exhausted and engine.interrupted_reason is None:
            raise IncompleteJob(
                f"{type(instance).__name__}.perform() returned before each_sub_batch() reached "
                f"the end of job {job.id}'s range (a break in the loop?); the last sub-batch "
                "rolled back and the job will be retried from its checkpoint"
            )
    except LeaseLost:
        _close(engine)
        raise
    except Exception as exc:
        _close(engine)
        if is_connection_error(exc):  # not the job's fault: give it back, attempt refunded
            return connection_lost(job, engine, exc, lambda: end(engine, started, release=True))
        return end(engine, started, exception=exc)
    except BaseException:
        # A worker shutdown or an interrupt is not a failed attempt: give the job back.
        _close(engine)
        try:
            end(engine, started, release=True)
        except Exception:  # never hide the interrupt; the lease expiry recovers the job
            logger.exception("could not give job %s back after an interrupt", job.id)
        raise
    return end(engine, started)


def _claim(
    conn: psycopg.Connection[Any], name: str, operation_id: Any, job_id: Any, owner: str
) -> tuple[OperationRecord, JobStatus, JobRecord]:
    """Read the operation and claim its job, in one transaction and one round trip (the
    claim and the operation's ``last_run_at`` apply only if the operation exists)."""
    key = parse_operation_id(operation_id)
    operations, jobs = tables_for(key)
    params = {
        "worker_id": key,
        "id": job_id,
        "lease_owner": owner,
        "lease_seconds": float(REGISTRY.settings.lease_seconds),
    }
    with pipelined(conn), conn.transaction():
        found = conn.cursor(row_factory=dict_row).execute(
            query("operation_by_id", operations=operations, jobs=jobs), {"id": key}
        )
        before = conn.cursor(row_factory=dict_row).execute(
            query("execution_job_by_id", jobs=jobs), params
        )
        claimed = conn.cursor(row_factory=dict_row).execute(
            query("execution_claim_job", operations=operations, jobs=jobs), params
        )
        touch = query("execution_touch_claimed_operation", operations=operations, jobs=jobs)
        conn.execute(touch, params)
    row = found.fetchone()
    if row is None:
        raise OperationNotFound(f"no operation {operation_id!s} in database {name!r}")
    operation = OperationRecord.from_row(row)
    previous, job = before.fetchone(), claimed.fetchone()
    if previous is None:
        raise InvalidTransition(f"operation {operation.id} has no job {job_id!s}")
    if job is None and previous["lease_owner"] == owner:
        job = previous  # claimed by an earlier try whose answer was lost with its connection
    if job is None:
        raise InvalidTransition(
            f"job {job_id!s} of operation {operation.id} cannot run: it is "
            f"{JobStatus(previous['status']).name.lower()}"
            + (" under a live lease" if previous["status"] == JobStatus.RUNNING else "")
        )
    return operation, JobStatus(previous["status"]), JobRecord.from_row(job)


def _close(engine: SubBatchEngine | None) -> None:
    """Roll back the open sub-batch (or drop the connection if even that fails)."""
    if engine is not None:
        engine.close()


def _end(
    name: str,
    connection: psycopg.Connection[Any] | None,
    operation: OperationRecord,
    job: JobRecord,
    owner: str,
    engine: SubBatchEngine | None,
    started: float,
    *,
    exception: BaseException | None = None,
    release: bool = False,
) -> JobOutcome:
    """Write how the run ended on the job row, log it, and describe it."""
    duration = time.monotonic() - started
    metrics: dict[str, Any] = dict(job.metrics or {})
    metrics.update(engine.metrics() if engine else {})
    metrics.update(duration_seconds=round(duration, 6), runs=int(metrics.get("runs", 0)) + 1)
    interrupted = engine.interrupted_reason if engine else None
    if exception is not None:
        exception = as_timeout(exception)
        status, refund = JobStatus.FAILED, 0
        metrics["timeout_kind"] = getattr(exception, "kind", None)
    elif release or interrupted:
        status, refund = JobStatus.PENDING, 1
        metrics["interrupted_reason"] = interrupted or "released"
    else:
        status, refund = JobStatus.SUCCEEDED, 0
    _, jobs = tables_for(operation)

    params = {
        "status": int(status),
        "refund": refund,
        "exception_class": class_name(exception),
        "exception_message": exception_message(exception),
        "metrics": json.dumps(metrics, default=str),
        "partition": job.partition,
        "id": job.id,
        "lease_owner": owner,
    }
    tries: list[int] = []
    row = retrying(  # Postgres may be restarting: the job is given back once it answers
        f"recording the end of job {job.id}",
        lambda: finish_job(name, connection, job, jobs, params, tries),
    )
    if row is None:
        raise LeaseLost(f"job {job.id} was taken over by another runner before it finished")
    final = JobRecord.from_row(row)
    job_event(operation, final, JobStatus.RUNNING, interrupted_reason=interrupted)
    return JobOutcome(
        status=status,
        job=final,
        rows=engine.processed if engine else 0,
        affected=engine.affected if engine else 0,
        duration=duration,
        exception=exception,
        interrupted_reason=interrupted,
    )


def run_to_completion(
    operation_id: Any, *, stop_check: StopCheck | None = None, database: str | None = None
) -> OperationRecord:
    """Run an operation to its end in this process, without a broker (see :mod:`.completion`)."""
    from .completion import run_to_completion as run

    return run(operation_id, stop_check=stop_check, database=database)
