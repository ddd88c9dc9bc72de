"""Running jobs: creating the next one from the resume cursor, running one under a lease, and
``run_to_completion()`` — the synchronous loop that tests, finalizers and the CLI use.

The dramatiq runner actor calls the same :func:`create_next_job` and :func:`run_job`, so a
job behaves the same whoever runs it.

Connections. Bookkeeping (claim, finish, job creation) runs on pooled autocommit connections
in short transactions of its own. The sub-batches run on the peewee database's connection for
the running thread (see :mod:`dramatiq_bbo.batching`). Because a failed ``perform()`` leaves
the sub-batch generator suspended with its transaction open and the job row locked, the runner
closes it (rolling the sub-batch back) before any bookkeeping on another connection, which
would otherwise wait on that lock forever.

Leases. Claiming a job stamps it with a unique lease owner and an expiry renewed by every
sub-batch checkpoint. A job left ``running`` by a killed process is taken over once its lease
has expired; the old runner, if it was merely slow, finds another owner on the job row at its
next sub-batch and stops (:class:`~dramatiq_bbo.errors.LeaseLost`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import retries
from .batching import Keyset, SubBatchEngine, timeout_kind
from .db import DEFAULT_DATABASE, REGISTRY
from .errors import (
    IncompleteJob,
    InvalidTransition,
    LeaseLost,
    OperationNotFound,
    SubBatchTimeout,
)
from .keyset import next_batch_bounds
from .observability.logs import JOB_TRANSITION, WORKER_TRANSITION, event, logger
from .operation import BaseOperation, resolve
from .queries import query
from .records import JobRecord, JobStatus, OperationRecord, OperationStatus
from .store import fetch_operation, tables_for
from .tables import table_info, table_model

StopCheck = Callable[[], str | None]

#: longest exception message kept on a job row
MAX_EXCEPTION_MESSAGE = 2000


@dataclass(frozen=True)
class JobOutcome:
    """How one run of a job ended. ``rows``/``affected`` count this run only."""

    status: JobStatus
    job: JobRecord
    rows: int
    affected: int
    duration: float
    exception: BaseException | None = None
    interrupted_reason: str | None = None

    @property
    def timed_out(self) -> bool:
        return isinstance(self.exception, SubBatchTimeout)


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
def create_next_job(conn: psycopg.Connection[Any], operation: OperationRecord) -> JobRecord | None:
    """Hand the next batch of the operation's range to a new pending job, and advance the
    operation's ``next_cursor`` past it, in one transaction under the operation's row lock
    (so two creators never hand out one range twice). None when the range is exhausted."""
    _, keyset = build_operation(operation)
    operations, jobs = tables_for(operation)
    settings = REGISTRY.settings
    with conn.transaction():
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
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
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
            ).fetchone()
        conn.execute(
            query("execution_advance_operation", operations=operations),
            {"next_cursor": json.dumps(bounds[1]), "partition": locked.partition, "id": locked.id},
        )
    assert row is not None
    return JobRecord.from_row(row)


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
) -> JobOutcome:
    """Run one job of an operation: claim it (one more attempt, under a lease), run the
    author's ``perform()`` over it, and record how it ended (see :class:`JobOutcome`)."""
    name = database or DEFAULT_DATABASE
    settings = REGISTRY.settings
    owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"
    with REGISTRY.connection(name) as conn:
        operation = fetch_operation(conn, operation_id)
        if operation is None:
            raise OperationNotFound(f"no operation {operation_id!s} in database {name!r}")
        previous, job = _claim(conn, operation, job_id, owner, settings.lease_seconds)
    _job_event(operation, job, previous)
    started = time.monotonic()
    engine: SubBatchEngine | None = None
    try:
        instance, keyset = build_operation(operation, job)
        engine = SubBatchEngine(
            keyset=keyset,
            operation=operation,
            job=job,
            lease_owner=owner,
            settings=settings,
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
        return _end(name, operation, job, owner, engine, started, exception=exc)
    except BaseException:
        # A worker shutdown or an interrupt is not a failed attempt: give the job back.
        _close(engine)
        try:
            _end(name, operation, job, owner, engine, started, release=True)
        except Exception:  # never hide the interrupt; the lease expiry recovers the job
            logger.exception("could not give job %s back after an interrupt", job.id)
        raise
    return _end(name, operation, job, owner, engine, started)


def _claim(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    job_id: Any,
    owner: str,
    lease_seconds: float,
) -> tuple[JobStatus, JobRecord]:
    operations, jobs = tables_for(operation)
    key = {"worker_id": operation.id, "id": job_id}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        before = cur.execute(query("execution_job_by_id", jobs=jobs), key).fetchone()
        if before is None:
            raise InvalidTransition(f"operation {operation.id} has no job {job_id!s}")
        row = cur.execute(
            query("execution_claim_job", jobs=jobs),
            {**key, "lease_owner": owner, "lease_seconds": float(lease_seconds)},
        ).fetchone()
        if row is None:
            raise InvalidTransition(
                f"job {job_id!s} of operation {operation.id} cannot run: it is "
                f"{JobStatus(before['status']).name.lower()}"
                + (" under a live lease" if before["status"] == JobStatus.RUNNING else "")
            )
        cur.execute(
            query("execution_touch_operation", operations=operations),
            {"partition": operation.partition, "id": operation.id},
        )
    return JobStatus(before["status"]), JobRecord.from_row(row)


def _close(engine: SubBatchEngine | None) -> None:
    """Roll back the open sub-batch; if even that fails, drop the thread's connection."""
    if engine is None:
        return
    try:
        engine.close()
    except Exception:
        logger.exception("rolling back the open sub-batch failed; dropping the connection")
        database = engine.database
        conn = getattr(database._state, "conn", None)
        database._state.reset()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _end(
    name: str,
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
        exception = _as_timeout(exception)
        status, refund = JobStatus.FAILED, 0
        metrics["timeout_kind"] = getattr(exception, "kind", None)
    elif release or interrupted:
        status, refund = JobStatus.PENDING, 1
        metrics["interrupted_reason"] = interrupted or "released"
    else:
        status, refund = JobStatus.SUCCEEDED, 0
    _, jobs = tables_for(operation)
    with REGISTRY.connection(name) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("execution_finish_job", jobs=jobs),
            {
                "status": int(status),
                "refund": refund,
                "exception_class": _class_name(exception),
                "exception_message": _message(exception),
                "metrics": json.dumps(metrics, default=str),
                "partition": job.partition,
                "id": job.id,
                "lease_owner": owner,
            },
        ).fetchone()
    if row is None:
        raise LeaseLost(f"job {job.id} was taken over by another runner before it finished")
    final = JobRecord.from_row(row)
    _job_event(operation, final, JobStatus.RUNNING, interrupted_reason=interrupted)
    return JobOutcome(
        status=status,
        job=final,
        rows=engine.processed if engine else 0,
        affected=engine.affected if engine else 0,
        duration=duration,
        exception=exception,
        interrupted_reason=interrupted,
    )


def _as_timeout(exception: BaseException) -> BaseException:
    """A timeout raised through the author's own queries becomes SubBatchTimeout too."""
    kind = timeout_kind(exception)
    if kind is None or isinstance(exception, SubBatchTimeout):
        return exception
    timeout = SubBatchTimeout(f"{kind} in the sub-batch: {str(exception).strip()}", kind=kind)
    timeout.__cause__ = exception
    return timeout


def _class_name(exception: BaseException | None) -> str | None:
    if exception is None:
        return None
    kind = type(exception)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return name[:255]


def _message(exception: BaseException | None) -> str | None:
    if exception is None:
        return None
    text = str(exception)
    return text if len(text) <= MAX_EXCEPTION_MESSAGE else text[: MAX_EXCEPTION_MESSAGE - 3] + "..."


def _job_event(
    operation: OperationRecord,
    job: JobRecord,
    previous: JobStatus,
    *,
    interrupted_reason: str | None = None,
) -> None:
    level = logging.WARNING if job.status == JobStatus.FAILED else logging.INFO
    event(
        JOB_TRANSITION,
        level=level,
        operation_id=str(operation.id),
        job_id=str(job.id),
        job_class_name=operation.job_class_name,
        table_name=operation.table_name,
        previous_state=previous.name.lower(),
        new_state=job.status.name.lower(),
        attempts=job.attempts,
        exception_class=job.exception_class,
        exception_message=job.exception_message,
        interrupted_reason=interrupted_reason,
        processed_tuple_count=job.processed_tuple_count,
    )


def worker_event(operation: OperationRecord, previous: OperationStatus | None) -> None:
    """Log an operation ("worker") status change."""
    event(
        WORKER_TRANSITION,
        operation_id=str(operation.id),
        job_class_name=operation.job_class_name,
        table_name=operation.table_name,
        column_name=operation.column_name,
        organization_id=operation.organization_id,
        database_name=operation.database_name,
        previous_state=None if previous is None else previous.name.lower(),
        new_state=operation.status.name.lower(),
    )


def run_to_completion(
    operation_id: Any, *, stop_check: StopCheck | None = None, database: str | None = None
) -> OperationRecord:
    """Run an operation to its end in this process, without a broker (see :mod:`.completion`)."""
    from .completion import run_to_completion as run

    return run(operation_id, stop_check=stop_check, database=database)
