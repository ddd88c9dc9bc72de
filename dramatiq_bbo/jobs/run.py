"""Running jobs: creating the next one from the resume cursor, running one under a lease, and
``run_to_completion()`` — the synchronous loop that tests, finalizers and the CLI use.

The dramatiq runner actor calls the same :func:`create_next_job` and :func:`run_job`, so a
job behaves the same whoever runs it.

Connections. Bookkeeping (claim, finish, job creation) runs on pooled autocommit connections
(or the one a caller running many jobs passes in) in short transactions of its own, each sent
in as few round trips as it can (:mod:`dramatiq_bbo.walk.statements`): the claim reads the operation
and claims the job in one; a job is created already claimed in two; the end of a job is one
transaction with what it means for its operation (one round trip), and ``run_to_completion()``
(:func:`run_job_chain`) ends each job in the transaction that creates and claims the next one
(two, :mod:`dramatiq_bbo.jobs.creation`). The
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

How a run ended is :mod:`dramatiq_bbo.jobs.verdict` (:class:`JobOutcome`, the events logged:
:mod:`dramatiq_bbo.jobs.outcomes`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import IncompleteJob, LeaseLost
from ..logs import logger
from ..pipeline.runtime import current
from ..reconnect import connection_lost, is_connection_error, retrying
from ..state.records import JobRecord, JobStatus, OperationRecord
from ..walk.checkpoint import JobCheck, SubBatchEngine, sub_batch_guards
from . import creation
from .bookkeeping import bookkeeping
from .claims import (
    Claimed,
    ClaimGate,
    ClaimGivenUp,
    claim,
    new_owner,
    prepare_retry,
    recover_claimed,
)
from .creation import Chained
from .ending import StopCheck
from .heartbeat import HEARTBEAT, lease_lost_check
from .instance import build_operation
from .outcomes import JobOutcome, job_event
from .range_probe import density
from .verdict import verdict

__all__ = [
    "Chained",
    "ClaimGate",
    "ClaimGivenUp",
    "JobOutcome",
    "StopCheck",
    "build_operation",
    "create_next_job",
    "end_and_next",
    "prepare_retry",
    "run_job",
    "run_job_chain",
    "run_next_job",
]


# -- creating jobs (jobs/creation.py, given the sub-batch guards of the settings) -----------
def create_next_job(
    conn: psycopg.Connection[Any], operation: OperationRecord, *, claim_for: str | None = None
) -> JobRecord | None:
    """:func:`dramatiq_bbo.jobs.creation.create_next_job`: the operation's next job (claimed
    by ``claim_for``), in two round trips; None when its range is exhausted."""
    guards = sub_batch_guards(REGISTRY.settings)
    return creation.create_next_job(conn, operation, guards=guards, claim_for=claim_for)


def end_and_next(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    job: JobRecord,
    finish: dict[str, Any],
    **options: Any,
) -> Chained:
    """:func:`dramatiq_bbo.jobs.creation.end_and_next`: the end of ``job`` and the creation
    of the next one (``claim_for``, ``create_next``, ``retried``) in one transaction."""
    guards = sub_batch_guards(REGISTRY.settings)
    return creation.end_and_next(conn, operation, job, finish, guards=guards, **options)


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
    gate: ClaimGate | None = None,
) -> JobOutcome:
    """Run one job of an operation: claim it (one more attempt, under a lease), run the
    author's ``perform()`` over it, and record how it ended (see :class:`JobOutcome`).

    ``connection``: an autocommit connection to ``database`` for the claim and the end of the
    job (a caller running many jobs keeps one), instead of one from the pool each time.
    ``stage_token``: the operation's stage lease a pipeline runner message holds; the job is
    not claimed once another stage holds it, and the heartbeat renews it meanwhile.
    ``job_check``: asked after ``stop_check``, with the claimed job (the middleware's gate).
    ``gate``: asked in the claim's transaction before the job is claimed
    (:data:`~dramatiq_bbo.jobs.claims.ClaimGate`); :class:`ClaimGivenUp` when it objects."""
    name = database or DEFAULT_DATABASE
    owner = new_owner()

    def claim_it() -> Claimed:
        with bookkeeping(name, connection) as conn:
            return claim(conn, name, operation_id, job_id, owner, stage_token, gate)

    operation, previous, job, oid = retrying(
        f"claiming job {job_id!s}", claim_it, settings=REGISTRY.settings
    )
    lease = HEARTBEAT.hold(name, operation, job=job, owner=owner, stage_token=stage_token)
    checks = (stop_check, job_check)
    try:
        return _run_claimed(
            name, connection, operation, job, owner, previous, *checks, table_oid=oid
        )
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
    return _run_created(conn, operation, job, owner, stop_check, database, None)


def run_job_chain(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    *,
    stop_check: StopCheck | None = None,
    database: str | None = None,
) -> JobOutcome | None:
    """Run the operation's jobs back to back, as :func:`run_next_job` runs one: each success
    is recorded in the transaction that creates and claims the next job, sized by the
    optimizer (:func:`~dramatiq_bbo.jobs.creation.end_and_next`). Stops after a job that did
    not succeed, or when no next job was created (range exhausted — the operation then ended
    with its last job when nothing was left —, operation no longer active, another job
    running). The last job's outcome; None when the range was exhausted from the start."""
    owner = new_owner()
    job = create_next_job(conn, operation, claim_for=owner)
    outcome = None
    recent: tuple[JobRecord, ...] | None = None  # the optimizer's window, kept along the chain
    while job is not None:
        chain = _Chain(new_owner(), recent=recent)
        outcome = _run_created(conn, operation, job, owner, stop_check, database, chain)
        if chain.result is None or chain.result.next_job is None:
            break
        operation, job, owner = chain.result.operation, chain.result.next_job, chain.owner
        recent = chain.result.recent or None
    return outcome


@dataclass
class _Chain:
    """The next job's lease owner, and what ending this job in one transaction with the
    creation of the next one committed."""

    owner: str
    result: Chained | None = None
    recent: tuple[JobRecord, ...] | None = None  # the previous end's window (Chained.recent)


def _run_created(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    job: JobRecord,
    owner: str,
    stop_check: StopCheck | None,
    database: str | None,
    chain: _Chain | None,
) -> JobOutcome:
    """Run a job created claimed by ``owner`` (its table's identity just checked)."""
    name = database or DEFAULT_DATABASE
    lease = HEARTBEAT.hold(name, operation, job=job, owner=owner)
    try:
        return _run_claimed(
            name,
            conn,
            operation,
            job,
            owner,
            JobStatus.PENDING,
            stop_check,
            chain=chain,
            verified=True,
        )
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
    *,
    chain: _Chain | None = None,
    verified: bool = False,
    table_oid: int | None = None,
) -> JobOutcome:
    """Run ``perform()`` over a job this runner claimed, and record how it ended (creating
    the next job in that same transaction when ``chain`` asks for it and the job succeeded);
    ``verified``: the job was created claimed, its table's identity checked as it was;
    ``table_oid``: what the claim found the table's name to name (checked against it)."""
    job_event(operation, job, previous)
    started = time.monotonic()
    engine: SubBatchEngine | None = None
    end = functools.partial(_end, name, connection, operation, job, owner, chain=chain)
    try:
        instance, keyset = build_operation(
            operation, job, connection, verified=verified, table_oid=table_oid
        )
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
        _check_complete(instance, engine, job)
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


def _check_complete(instance: Any, engine: SubBatchEngine, job: JobRecord) -> None:
    if engine.started and not engine.exhausted and engine.interrupted_reason is None:
        raise IncompleteJob(
            f"{type(instance).__name__}.perform() returned before each_sub_batch() reached "
            f"the end of job {job.id}'s range (a break in the loop?); the last sub-batch "
            "rolled back and the job will be retried from its checkpoint"
        )


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
    chain: _Chain | None = None,
    exception: BaseException | None = None,
    release: bool = False,
) -> JobOutcome:
    """Write how the run ended on the job row, log it, and describe it. A worker shutdown
    (or an interrupt) hands the job over: an interruption, not an attempt."""
    duration = time.monotonic() - started
    ended = verdict(job, owner, engine, duration, exception, release)
    # rows per key value over the job's range: what earlier runs of it walked, and this one
    rows = int(job.processed_tuple_count or 0) + (engine.processed if engine else 0)
    walked = density(job.min_cursor, job.max_cursor, rows)
    final = _record_end(name, connection, operation, job, ended.params, chain, walked)
    job_event(operation, final, JobStatus.RUNNING, interrupted_reason=ended.interrupted)
    outcome = ended.outcome(final, engine, duration)
    current().after_job(operation, outcome)
    return outcome


def _record_end(
    name: str,
    connection: psycopg.Connection[Any] | None,
    operation: OperationRecord,
    job: JobRecord,
    params: dict[str, Any],
    chain: _Chain | None,
    walked: float | None = None,
) -> JobRecord:
    """Write the end (``params``) in one transaction with what it means for the operation,
    and the next job's creation when ``chain`` asks for it (:func:`end_and_next`; ``walked``:
    the density of the keys the job walked, which sizes the next range). Postgres
    may be restarting: the end is written once it answers, recognising an earlier try whose
    answer was lost (and the next job it created, if it did)."""
    tries: list[int] = []

    def attempt() -> Chained:
        tries.append(1)
        with bookkeeping(name, connection) as conn:
            chained = end_and_next(
                conn,
                operation,
                job,
                params,
                claim_for=chain.owner if chain else None,
                create_next=chain is not None,
                retried=len(tries) > 1,
                recent=chain.recent if chain and len(tries) == 1 else None,
                density=walked,
            )
            if chain is not None and chained.next_job is None and len(tries) > 1:
                found = recover_claimed(conn, operation, chain.owner)
                if found is not None:
                    chained = Chained(chained.job, chained.operation, found)
        return chained

    chained = retrying(f"recording the end of job {job.id}", attempt, settings=REGISTRY.settings)
    if chain is not None:
        chain.result = chained
    return chained.job
