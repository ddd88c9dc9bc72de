"""Creating jobs: the next batch of an operation's range handed to a new job, alone
(:func:`create_next_job`) or in the transaction that records the end of the job before it
(:func:`end_and_next`).

**Round trips.** A job's bookkeeping is paid once per job, but it is paid in round trips, so
each step sends its statements together (:func:`~dramatiq_bbo.walk.statements.pipelined`):

- :func:`create_next_job`: one round trip locks the operation row, checks that no other job
  runs, checks the table's identity and probes the range from the cursor the caller's record
  holds; a second inserts the job (already claimed when asked), advances the cursor and
  commits. A stale record (another creator moved the cursor) costs one more probe.
- :func:`end_and_next`: one round trip locks the operation row, records the end of job N
  (and what it means for the operation: its counters rolled up, a cancel that came after the
  last row made a finish), reads the optimizer's recent jobs, checks that no other job runs
  and the table's identity, and probes the range at the current size; a second inserts job N+1
  claimed, advances the cursor, writes the optimizer's new size and commits. When the
  optimizer changed the size (or an operator did), the range is probed again first: three.

**Guarantees** are those of every claim (:mod:`dramatiq_bbo.jobs.claims`): the operation
row is locked first, then job rows (the library's one lock order); the range is probed and
handed out under that lock, so two creators never hand out one range twice; a job is created
claimed only while no other job of the operation runs under a live lease; job N's end is
written only while this runner still holds it (else :class:`~dramatiq_bbo.errors.LeaseLost`
and nothing is written).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import REGISTRY
from ..errors import InvalidTransition, LeaseLost, OperationNotFound
from ..pipeline.runtime import transitioned
from ..queries import query
from ..state.records import JobRecord, JobStatus, OperationRecord, OperationStatus
from ..state.store import insert_job, tables_for
from ..walk.keyset import Keyset, Range
from ..walk.statements import one_transaction
from . import sizing
from .bookkeeping import earlier_end, finish_if_exhausted, roll_up_counters
from .instance import build_operation, identity_holds, identity_query
from .range_probe import RangeProbe, operation_density

__all__ = ["Chained", "create_next_job", "end_and_next"]

Cur = psycopg.Cursor[Any]
#: ``batching_sub_batch_guards`` parameters (``walk.checkpoint.sub_batch_guards``, which the
#: runner passes in: this module sits below the sub-batch engine)
Guards = dict[str, str]


@dataclass(frozen=True)
class Chained:
    """What :func:`end_and_next` committed: job N as recorded, the operation after the
    transaction, job N+1 (claimed by ``claim_for``) when one was created, and the operation
    ended in that same transaction (range exhausted, nothing left to run) if it was."""

    job: JobRecord
    operation: OperationRecord
    next_job: JobRecord | None = None
    ended: OperationRecord | None = None
    #: the optimizer's window (recent successful jobs, latest first) after job N: what the
    #: next end of the same chain passes as ``recent`` instead of reading it again
    recent: tuple[JobRecord, ...] = ()


def _keyset_and_identity(
    conn: psycopg.Connection[Any], operation: OperationRecord
) -> tuple[Keyset, tuple[Any, dict[str, Any]] | None]:
    """The operation's cached keyset, and the table identity check to send in the caller's
    pipeline (None when the keyset was just built, which checked it)."""
    identity = identity_query(operation)
    _, keyset = build_operation(operation, conn=conn, verified=identity is not None)
    return keyset, identity


def _identity_holds(
    conn: psycopg.Connection[Any], operation: OperationRecord, sent: Cur | None
) -> bool:
    """Whether the identity check sent (``sent``; None: none needed) still finds the table."""
    return sent is None or identity_holds(operation, sent.fetchone())


def _lock(conn: psycopg.Connection[Any], operation: OperationRecord, guards: Guards) -> Cur:
    operations, jobs = tables_for(operation)
    conn.execute(query("batching_sub_batch_guards"), guards)
    statement = query("operation_by_id_for_update", operations=operations, jobs=jobs)
    return conn.cursor(row_factory=dict_row).execute(statement, {"id": operation.id})


def _locked(found: Cur, operation: OperationRecord) -> OperationRecord:
    row = found.fetchone()
    if row is None:
        raise OperationNotFound(f"operation {operation.id} disappeared")
    return OperationRecord.from_row(row)


def _live(conn: psycopg.Connection[Any], operation: OperationRecord) -> Cur:
    _, jobs = tables_for(operation)
    return conn.execute(query("execution_other_live_job", jobs=jobs), {"worker_id": operation.id})


def _hand_out(
    conn: psycopg.Connection[Any],
    locked: OperationRecord,
    range_: Range,
    *,
    size: int,
    claim_for: str | None,
    set_batch_size: int | None = None,
) -> tuple[Cur, Cur]:
    """Insert the job over ``range_`` (claimed by ``claim_for``) and advance the operation's
    cursor past it (with the optimizer's ``set_batch_size``): the cursors, not read yet."""
    operations, _ = tables_for(locked)
    inserted = insert_job(
        conn,
        locked,
        partition=locked.partition,
        batch_size=size,
        sub_batch_size=locked.sub_batch_size,
        pause_ms=locked.pause_ms,
        range_=range_,
        claim_for=claim_for,
        lease_seconds=float(REGISTRY.settings.lease_seconds),
    )
    advanced = conn.cursor(row_factory=dict_row).execute(
        query("execution_advance_operation", operations=operations),
        {
            "next_cursor": json.dumps(range_[1]),
            "batch_size": size,
            "set_batch_size": set_batch_size,
            "claimed": claim_for is not None,
            "partition": locked.partition,
            "id": locked.id,
        },
    )
    return inserted, advanced


def create_next_job(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    *,
    guards: Guards,
    claim_for: str | None = None,
) -> JobRecord | None:
    """Hand the next batch of the operation's range to a new pending job, and advance the
    operation's ``next_cursor`` past it, in one transaction under the operation's row lock
    (so two creators never hand out one range twice). None when the range is exhausted.

    ``claim_for``: a lease owner that holds the new job from its creation, as :func:`run_job`
    would claim it (InvalidTransition while another job of the operation runs under a live
    lease). Two round trips when ``operation`` is current (see the module docstring)."""
    try:
        return _create(conn, operation, guards, claim_for)
    except _TableMoved:
        build_operation(operation, conn=conn)  # resolved again: TableChanged if replaced
        return _create(conn, operation, guards, claim_for)


def _create(
    conn: psycopg.Connection[Any], operation: OperationRecord, guards: Guards, claim_for: str | None
) -> JobRecord | None:
    keyset, identity = _keyset_and_identity(conn, operation)
    with one_transaction(conn, generic_plans=True):
        found = _lock(conn, operation, guards)
        live = _live(conn, operation) if claim_for is not None else None
        checked = conn.execute(*identity) if identity is not None else None
        probe = RangeProbe(
            conn, keyset, operation, operation.batch_size, operation_density(operation)
        )
        locked = _locked(found, operation)
        if not _identity_holds(conn, operation, checked):
            raise _TableMoved()
        if live is not None and (row := live.fetchone()) is not None and row[0]:
            raise InvalidTransition(
                f"operation {locked.id} already runs a job under a live lease; one at a time"
            )
        if not probe.fits(locked, locked.batch_size):
            probe = RangeProbe(conn, keyset, locked, locked.batch_size, operation_density(locked))
        range_ = probe.bounds()
        if range_ is None:
            return None
        inserted, _ = _hand_out(conn, locked, range_, size=locked.batch_size, claim_for=claim_for)
    row = inserted.fetchone()
    assert row is not None
    return JobRecord.from_row(row)


class _TableMoved(Exception):
    """The cached table's oid changed: the caller rebuilds (and meets TableChanged)."""


def end_and_next(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    job: JobRecord,
    finish: dict[str, Any],
    *,
    guards: Guards,
    claim_for: str | None = None,
    create_next: bool = True,
    retried: bool = False,
    recent: tuple[JobRecord, ...] | None = None,
    density: float | None = None,
) -> Chained:
    """Record the end of ``job`` (``finish``: the parameters of ``execution_finish_job``,
    lease owner included) with what it means for its operation, and — ``create_next``, when
    it succeeded and the operation goes on — create job N+1 claimed by ``claim_for`` (None:
    pending), sized by the optimizer, in one transaction of two round trips (see the module
    docstring; one without ``create_next``). LeaseLost, nothing written, when another runner
    holds ``job``; ``retried`` (a try after a lost connection) first recognises the earlier
    try's committed end (:func:`~dramatiq_bbo.jobs.bookkeeping.earlier_end`). No next job
    when the operation is no longer active, another job runs, the table changed, or the range
    is exhausted (the operation then ends here when nothing is left to run). ``operation`` is
    best the record the job was created from: its cursor and size are what the range is
    probed with before the lock answers. ``recent``: the previous end's ``Chained.recent``
    when no other runner ran a job since (a chain), so the window is not read again.
    ``density``: rows per key value in the range job N walked (sizes an estimated next
    range, :mod:`~dramatiq_bbo.jobs.range_probe`)."""
    operations, jobs = tables_for(operation)
    chained = create_next and finish["status"] == JobStatus.SUCCEEDED
    keyset, identity = _keyset_and_identity(conn, operation) if chained else (None, None)
    with one_transaction(conn, generic_plans=True):
        found = _lock(conn, operation, guards)
        ended = conn.cursor(row_factory=dict_row).execute(
            query("execution_finish_job", jobs=jobs), finish
        )
        roll_up_counters(conn, operation, job)
        cancel = _after_end(conn, operation, finish, operations, jobs)
        checked = conn.execute(*identity) if identity is not None else None
        if keyset is not None:
            window = _read_window(conn, operation) if recent is None else None
            live = _live(conn, operation)
            probe = RangeProbe(conn, keyset, operation, operation.batch_size, density)
        locked = _locked(found, operation)
        row = ended.fetchone()
        if row is None and retried:
            row = earlier_end(conn, job, jobs, finish)
        if row is None:
            raise LeaseLost(f"job {job.id} was taken over by another runner before it finished")
        result = Chained(JobRecord.from_row(row), locked)
        identity_ok = _identity_holds(conn, operation, checked)
        if keyset is not None and locked.status == OperationStatus.ACTIVE and identity_ok:
            other = bool((flag := live.fetchone()) and flag[0])
            jobs_seen = _window(result.job, window, recent)
            result = _next(conn, keyset, probe, locked, result.job, jobs_seen, claim_for, other)
            result = replace(result, recent=tuple(jobs_seen))
    if cancel is not None and (row := cancel.fetchone()) is not None:
        transitioned(OperationRecord.from_row(row), OperationStatus.CANCELLED)
    if result.ended is not None:
        transitioned(result.ended, OperationStatus.ACTIVE)
    return result


def _read_window(conn: psycopg.Connection[Any], operation: OperationRecord) -> Cur:
    return conn.cursor(row_factory=dict_row).execute(*sizing.recent_jobs_query(operation))


def _window(
    done: JobRecord, read: Cur | None, kept: tuple[JobRecord, ...] | None
) -> list[JobRecord]:
    """The optimizer's recent successful jobs, latest first: as read in this transaction
    (``done`` among them), or the chain's ``kept`` window with ``done`` added."""
    if read is not None:
        return [JobRecord.from_row(row) for row in read.fetchall()]
    return [done, *(kept or ())][: sizing.WINDOW]


def _after_end(
    conn: psycopg.Connection[Any],
    operation: OperationRecord,
    finish: dict[str, Any],
    operations: Any,
    jobs: Any,
) -> Cur | None:
    """What the end means for the operation row (see ``ending.after_run``): a failed
    attempt's error kept on it; after a success, a cancel that came after the last row made
    a finish (its cursor, to read once committed)."""
    if finish["status"] == JobStatus.FAILED and finish["exception_class"]:
        conn.execute(
            query("execution_record_last_error", operations=operations),
            {
                "exception_class": finish["exception_class"],
                "exception_message": finish["exception_message"],
                "partition": operation.partition,
                "id": operation.id,
            },
        )
        return None
    if finish["status"] != JobStatus.SUCCEEDED:
        return None
    statement = query("execution_finish_cancelled_after_last_row", operations=operations, jobs=jobs)
    return conn.cursor(row_factory=dict_row).execute(statement, {"id": operation.id})


def _next(
    conn: psycopg.Connection[Any],
    keyset: Keyset,
    probe: RangeProbe,
    locked: OperationRecord,
    done: JobRecord,
    recent: list[JobRecord],
    claim_for: str | None,
    other_running: bool,
) -> Chained:
    """After job N's success, under the lock: the optimizer's size, then job N+1 over the
    next range, or the end of the operation when its range is exhausted."""
    decision = sizing.decide(locked, recent) if sizing.sized_by_optimizer(locked, done) else None
    size = locked.batch_size
    if decision is not None and decision.changed and decision.new >= locked.sub_batch_size:
        size = decision.new
    new_size = size if size != locked.batch_size else None
    if not probe.fits(locked, size):
        grown = probe.grown(conn, locked, size)
        probe = grown or RangeProbe(conn, keyset, locked, size, probe.density)
    range_ = probe.bounds()
    if range_ is None:
        return _exhausted(conn, locked, done, decision, new_size)
    if other_running and claim_for is not None:
        return Chained(done, locked)  # one job at a time: the runner elsewhere goes on
    inserted, advanced = _hand_out(
        conn, locked, range_, size=size, claim_for=claim_for, set_batch_size=new_size
    )
    new, after = inserted.fetchone(), advanced.fetchone()
    assert new is not None and after is not None
    return Chained(done, OperationRecord.from_row(after), JobRecord.from_row(new))


def _exhausted(
    conn: psycopg.Connection[Any],
    locked: OperationRecord,
    done: JobRecord,
    decision: Any,
    new_size: int | None,
) -> Chained:
    """The range is walked: the optimizer's size written, and the operation finished now
    when nothing is left to run (its size kept for its configuration's next operation)."""
    operations, _ = tables_for(locked)
    if new_size is not None:
        conn.execute(
            query("pipeline_set_batch_size", operations=operations),
            {"batch_size": new_size, "partition": locked.partition, "id": locked.id},
        )
    ended = finish_if_exhausted(conn, locked)
    if ended is not None and decision is not None:
        sizing.keep_learned(conn, locked, decision)
    return Chained(done, ended or locked, None, ended)
