"""Running jobs: creating the next one from the resume cursor, running one under a lease, and
``run_to_completion()`` — the synchronous loop that tests, finalizers and the CLI use.

The dramatiq runner actor calls the same :func:`create_next_job` and :func:`run_job`, so a
job behaves the same whoever runs it.

Connections. Bookkeeping (claim, finish, job creation) runs on pooled autocommit connections
(or the one a caller running many jobs passes in) in short transactions of its own, each sent
in as few round trips as it can (:mod:`dramatiq_bbo.walk.statements`): the claim reads the operation
and claims the job in one; ``run_to_completion()`` creates a job already claimed. The
sub-batches run on the peewee database's connection for the running thread (see
:mod:`dramatiq_bbo.walk.checkpoint`). Because a failed ``perform()`` leaves the sub-batch generator
suspended with its transaction open and the job row locked, the runner closes it (rolling the
sub-batch back) before any bookkeeping on another connection, which would otherwise wait on
that lock forever. A lost connection is an interruption, not a failed attempt: the job goes
back to pending at its checkpoint once Postgres answers (:mod:`dramatiq_bbo.reconnect`).

Leases. Claiming a job (:mod:`dramatiq_bbo.jobs.claims`: operation row first, one running job per
operation) stamps it with a unique lease owner and an expiry that the process's heartbeat
renews while the job runs (:mod:`dramatiq_bbo.jobs.heartbeat`). A job left ``running`` by a killed
or frozen process is taken over once its lease has expired (an interruption, not an attempt);
the old runner, if it was merely slow, finds another owner on the job row at its next
sub-batch, or its checkpoint refuses to commit, and it stops
(:class:`~dramatiq_bbo.errors.LeaseLost`).

How a run ended (:class:`JobOutcome`, the events logged) is :mod:`dramatiq_bbo.jobs.outcomes`.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import (
    IncompleteJob,
    InvalidTransition,
    LeaseLost,
    OperationNotFound,
    TooManyInterruptions,
)
from ..logs import logger
from ..pipeline.runtime import current
from ..queries import query
from ..reconnect import connection_lost, is_connection_error, retrying
from ..state.records import JobRecord, JobStatus, OperationRecord
from ..state.store import fetch_operation, insert_job, tables_for
from ..walk.checkpoint import JobCheck, SubBatchEngine, sub_batch_guards
from ..walk.keyset import next_batch_bounds
from ..walk.statements import pipelined
from . import retries
from .bookkeeping import bookkeeping, finish_job
from .claims import claim, claim_new, new_owner, other_job_running
from .ending import StopCheck, after_run
from .heartbeat import HEARTBEAT, lease_lost_check
from .instance import build_operation
from .outcomes import JobOutcome, as_timeout, class_name, exception_message, job_event
from .roll_up import roll_up_leftovers

__all__ = [
    "JobOutcome",
    "StopCheck",
    "build_operation",
    "create_next_job",
    "prepare_retry",
    "run_job",
    "run_next_job",
]


#: the interrupted_reason of a job stopped by its worker's shutdown (set by the pipeline)
WORKER_SHUTDOWN = "worker_shutdown"


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
    _, keyset = build_operation(operation, conn=conn)
    operations, jobs = tables_for(operation)
    settings = REGISTRY.settings
    with pipelined(conn), conn.transaction():
        conn.execute(query("batching_sub_batch_guards"), sub_batch_guards(settings))
        locked = fetch_operation(conn, operation.id, for_update=True)
        if locked is None:
            raise OperationNotFound(f"operation {operation.id} disappeared")
        if claim_for is not None and other_job_running(conn, locked):
            raise InvalidTransition(
                f"operation {locked.id} already runs a job under a live lease; one at a time"
            )
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
        inserted = insert_job(
            conn,
            locked,
            partition=locked.partition,
            batch_size=locked.batch_size,
            sub_batch_size=locked.sub_batch_size,
            pause_ms=locked.pause_ms,
            range_=bounds,
        )
        conn.execute(
            query("execution_advance_operation", operations=operations),
            {
                "next_cursor": json.dumps(bounds[1]),
                "batch_size": locked.batch_size,
                "partition": locked.partition,
                "id": locked.id,
            },
        )
        if claim_for is not None:
            inserted = claim_new(conn, locked, inserted.fetchone(), claim_for)
    row = inserted.fetchone()
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
    connection: psycopg.Connection[Any] | None = None,
    stage_token: str | None = None,
    job_check: JobCheck | None = None,
) -> JobOutcome:
    """Run one job of an operation: claim it (one more attempt, under a lease), run the
    author's ``perform()`` over it, and record how it ended (see :class:`JobOutcome`).

    ``connection``: an autocommit connection to ``database`` for the claim and the end of the
    job (a caller running many jobs keeps one), instead of one from the pool each time.
    ``stage_token``: the operation's stage lease a pipeline runner message holds; the job is
    not claimed once another stage holds it, and the heartbeat renews it meanwhile.
    ``job_check``: asked after ``stop_check``, with the claimed job (the middleware's gate)."""
    name = database or DEFAULT_DATABASE
    owner = new_owner()

    def claim_it() -> tuple[OperationRecord, JobStatus, JobRecord]:
        with bookkeeping(name, connection) as conn:
            return claim(conn, name, operation_id, job_id, owner, stage_token)

    operation, previous, job = retrying(
        f"claiming job {job_id!s}", claim_it, settings=REGISTRY.settings
    )
    lease = HEARTBEAT.hold(name, operation, job=job, owner=owner, stage_token=stage_token)
    checks = (stop_check, job_check)
    try:
        return _run_claimed(name, connection, operation, job, owner, previous, *checks)
    finally:
        HEARTBEAT.release(lease)


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
    owner = new_owner()
    job = create_next_job(conn, operation, claim_for=owner)
    if job is None:
        return None
    name = database or DEFAULT_DATABASE
    lease = HEARTBEAT.hold(name, operation, job=job, owner=owner)
    try:
        return _run_claimed(name, conn, operation, job, owner, JobStatus.PENDING, stop_check)
    finally:
        HEARTBEAT.release(lease)


def _run_claimed(
    name: str,
    connection: psycopg.Connection[Any] | None,
    operation: OperationRecord,
    job: JobRecord,
    owner: str,
    previous: JobStatus,
    stop_check: StopCheck | None,
    job_check: JobCheck | None = None,
) -> JobOutcome:
    """Run ``perform()`` over a job this runner claimed, and record how it ended."""
    job_event(operation, job, previous)
    started = time.monotonic()
    engine: SubBatchEngine | None = None
    end = functools.partial(_end, name, connection, operation, job, owner)
    try:
        instance, keyset = build_operation(operation, job, connection)
        engine = SubBatchEngine(
            keyset=keyset,
            operation=operation,
            job=job,
            lease_owner=owner,
            settings=REGISTRY.settings,
            stop_check=lease_lost_check(name, job, stop_check),
            job_check=job_check,
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
        if getattr(exc, "sqlstate", None) == "LEASE":  # the checkpoint found the lease gone
            raise LeaseLost(str(exc).strip()) from None
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
    """Write how the run ended on the job row, log it, and describe it. A worker shutdown
    (or an interrupt) hands the job over: an interruption, not an attempt."""
    duration = time.monotonic() - started
    metrics: dict[str, Any] = dict(job.metrics or {})
    metrics.update(engine.metrics() if engine else {})
    metrics.update(duration_seconds=round(duration, 6), runs=int(metrics.get("runs", 0)) + 1)
    interrupted = engine.interrupted_reason if engine else None
    interruption = int(release or interrupted == WORKER_SHUTDOWN)
    if exception is None and interruption:
        exception = _too_many_interruptions(job)
    exception, status, refund = _ending(exception, release or bool(interrupted), metrics)
    if release or interrupted:
        metrics["interrupted_reason"] = interrupted or "released"
    _, jobs = tables_for(operation)

    params = {
        "status": int(status),
        "refund": refund,
        "interruption": interruption,
        "exception_class": class_name(exception),
        "exception_message": exception_message(exception),
        "metrics": json.dumps(metrics, default=str),
        "partition": job.partition,
        "id": job.id,
        "lease_owner": owner,
    }
    if engine is not None and engine.unrolled:
        _roll_up(name, connection, operation, job, owner)
    tries: list[int] = []
    row = retrying(  # Postgres may be restarting: the job is given back once it answers
        f"recording the end of job {job.id}",
        lambda: finish_job(name, connection, job, jobs, params, tries),
        settings=REGISTRY.settings,
    )
    if row is None:
        raise LeaseLost(f"job {job.id} was taken over by another runner before it finished")
    final = JobRecord.from_row(row)
    job_event(operation, final, JobStatus.RUNNING, interrupted_reason=interrupted)
    after_run(name, connection, operation, final)
    outcome = _outcome(status, final, engine, duration, exception, interrupted)
    current().after_job(operation, outcome)
    return outcome


def _roll_up(
    name: str,
    connection: psycopg.Connection[Any] | None,
    operation: OperationRecord,
    job: JobRecord,
    owner: str,
) -> None:
    """The counts the walk left on the job row, onto the operation (a failure costs only
    the operation's counters until the job runs again: the views add them meanwhile)."""
    try:
        with bookkeeping(name, connection) as conn:
            roll_up_leftovers(conn, operation, job, owner)
    except psycopg.Error:
        logger.warning("rolling job %s's counts up onto its operation failed", job.id)


def _outcome(
    status: JobStatus,
    job: JobRecord,
    engine: SubBatchEngine | None,
    duration: float,
    exception: BaseException | None,
    interrupted: str | None,
) -> JobOutcome:
    """What the middleware's after_job hook is told of a run."""
    return JobOutcome(
        status=status,
        job=job,
        rows=engine.processed if engine else 0,
        affected=engine.affected if engine else 0,
        duration=duration,
        exception=exception,
        interrupted_reason=interrupted,
        sub_batch_seconds=tuple(engine.durations) if engine else (),
    )


def _ending(
    exception: BaseException | None, interrupted: bool, metrics: dict[str, Any]
) -> tuple[BaseException | None, JobStatus, int]:
    """How a run ends: failed (a timeout recognised as such, its kind in ``metrics``), given
    back as pending with the attempt refunded, or succeeded."""
    if exception is not None:
        exception = as_timeout(exception)
        metrics["timeout_kind"] = getattr(exception, "kind", None)
        return exception, JobStatus.FAILED, 0
    if interrupted:
        return None, JobStatus.PENDING, 1
    return None, JobStatus.SUCCEEDED, 0


def _too_many_interruptions(job: JobRecord) -> TooManyInterruptions | None:
    """Past ``max_interruptions``, one more interruption counts as a failed attempt."""
    most = int(REGISTRY.settings.max_interruptions)
    if job.interruptions < most:
        return None
    return TooManyInterruptions(
        f"job {job.id} was interrupted {job.interruptions + 1} times (max_interruptions is "
        f"{most}): this interruption counts as a failed attempt"
    )
