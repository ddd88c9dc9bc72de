"""``run_to_completion()``: one operation from where it stands to its end, in the calling thread,
with no broker — for tests, data-migration finalizers and the CLI.

It follows the same rules as the pipeline: resume an unfinished job before creating a new one
(a pending one; a failed one with attempts left, from its checkpoint, with a smaller sub-batch
if it timed out; a running one only once its lease expired, i.e. abandoned by a killed
process), split a job that timed out on its last attempt into two halves
(:mod:`dramatiq_bbo.jobs.planning`, shared with the orchestrator), and never run two jobs of one
operation at once. When the range is exhausted and nothing is left to run, the operation
finishes — or fails if jobs failed for good. A paused, cancelled, finished or failed operation
is returned untouched, and so is one whose class is disabled (``bbo.disable``) or whose
organization is read-only (:mod:`dramatiq_bbo.read_only.check`: held, as the pipeline holds
it); a pause, a cancel, a disable or a read-only flag while it runs stops it at the next
sub-batch checkpoint.

One job per operation, always. ``run_to_completion()`` takes the operation's stage lease — the
one the pipeline's messages pass along — and the heartbeat renews it while it runs: a stage
message that has not acted yet then finds the lease elsewhere and does nothing, and a pipeline
runner that finishes its job meanwhile sends no next message. A job a worker is running under
a live lease is **waited for** (it ends at its next checkpoint at the latest when paused, and
within one lease if its worker died) rather than refused: the caller asked for the operation
to be done. Whoever claims a job does so under the operation's row lock and only while no
other job of it runs (:mod:`dramatiq_bbo.jobs.claims`), so two jobs never overlap even then. When
it returns with the operation still unfinished (a ``stop_check`` reason), it gives the lease
back and wakes the pipeline, which carries the operation on.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import DEFAULT_DATABASE, REGISTRY
from ..errors import InvalidTransition, LeaseLost, OperationNotFound
from ..migrations import requires_schema
from ..pipeline.runtime import transitioned
from ..queries import query
from ..read_only.check import READ_ONLY_STOP
from ..reconnect import CONNECTION_LOST, is_broken, retrying
from ..state.records import JobRecord, OperationRecord, OperationStatus
from ..state.store import fetch_operation, get_operation, tables_for
from ..walk.statements import pipelined
from . import retries
from .ending import (
    CLASS_DISABLED,
    end_operation,
    job_counts,
    run_state_stop_reason,
    status_stop_check,
)
from .heartbeat import HEARTBEAT, release_stage, take_stage
from .planning import split_next
from .run import StopCheck, prepare_retry, run_job, run_job_chain


@requires_schema
def run_to_completion(
    operation_id: Any, *, stop_check: StopCheck | None = None, database: str | None = None
) -> OperationRecord:
    """Run the operation until its range is done (or it is paused, cancelled, or
    ``stop_check()`` returns a reason between sub-batches); returns its record then."""
    name = database or DEFAULT_DATABASE
    operation = retrying(
        f"starting operation {operation_id}",
        lambda: _activate(name, operation_id),
        settings=REGISTRY.settings,
    )
    if operation.status != OperationStatus.ACTIVE:
        return operation
    if _held_back(name, operation):  # as it stands now: held, if its organization is read-only
        return retrying(
            f"reading operation {operation_id}",
            lambda: get_operation(operation.id, database=name),
            settings=REGISTRY.settings,
        )
    token = f"run_to_completion:{uuid.uuid4().hex}"
    operation = _take_stage(name, operation, token)
    lease = HEARTBEAT.hold(name, operation, stage_token=token)
    try:
        result = _run(name, operation, stop_check)
    finally:
        HEARTBEAT.release(lease)
        release_stage(name, operation, token)
    if result.unfinished:  # stopped early: the pipeline (if set up here) carries it on
        from ..pipeline.wake import wake

        wake(result)
    return result


def _run(name: str, operation: OperationRecord, stop_check: StopCheck | None) -> OperationRecord:
    """The loop of :func:`run_to_completion`, under the operation's stage lease."""
    check = status_stop_check(name, operation, stop_check)
    max_attempts = int(REGISTRY.settings.max_attempts)
    # One bookkeeping connection for the whole run (a pool checkout costs a round trip),
    # replaced if it breaks; a step that lost its connection runs again once Postgres
    # answers (see dramatiq_bbo.reconnect): each step reads the state afresh.
    with _RunConnection(name) as keeper:
        while True:
            ended = retrying(
                f"running operation {operation.id}",
                lambda: _step(name, keeper.get(), operation.id, check, max_attempts),
                settings=REGISTRY.settings,
            )
            if ended is not None:
                return ended


def _step(
    name: str,
    conn: psycopg.Connection[Any],
    operation_id: Any,
    check: StopCheck,
    max_attempts: int,
) -> OperationRecord | None:
    """Run the operation's next job; its record once the run is over, else None."""
    current, job = _next_job(conn, operation_id, max_attempts)
    if current.status != OperationStatus.ACTIVE:
        return current
    try:
        if job is None:  # new jobs, each claimed as it is created (with the previous one's end)
            outcome = run_job_chain(conn, current, stop_check=check, database=name)
            if outcome is None:
                return end_operation(name, current, max_attempts)
        else:
            outcome = run_job(current.id, job.id, stop_check=check, database=name, connection=conn)
    except (InvalidTransition, LeaseLost):
        return None  # another runner claimed or took over the job: look again
    if outcome.interrupted_reason == CONNECTION_LOST:
        return None  # given back at its checkpoint: the next step resumes it
    if outcome.interrupted_reason is not None:
        return fetch_operation(conn, current.id) or current
    if retries.failed_for_good(outcome.job, outcome.timed_out, max_attempts):
        total, failed = job_counts(name, current, max_attempts)
        if retries.operation_should_fail(total, failed):
            return end_operation(name, current, max_attempts, failed=True)
    return None


class _RunConnection:
    """run_to_completion's bookkeeping connection from the pool, replaced once broken."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stack = contextlib.ExitStack()
        self._conn: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        if self._conn is None or is_broken(self._conn):
            self.close()  # a broken one goes back to the pool, which drops it
            self._conn = self._stack.enter_context(REGISTRY.connection(self.name))
        return self._conn

    def close(self) -> None:
        self._conn = None
        self._stack.close()

    def __enter__(self) -> _RunConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _next_job(
    conn: psycopg.Connection[Any], operation_id: Any, max_attempts: int
) -> tuple[OperationRecord, JobRecord | None]:
    """The operation as it stands and the job to run next: an unfinished one first (a
    pending one, a failed one with attempts left, one abandoned under an expired lease),
    else the half of a job split after timing out on its last attempt; None when a new job
    is next (or the operation is no longer active). One round trip reads all of it."""
    operations, jobs = tables_for(operation_id)
    key = {"id": operation_id, "worker_id": operation_id, "max_attempts": max_attempts}
    while True:
        with pipelined(conn):
            found, resumable, live, splittable = (
                conn.cursor(row_factory=dict_row).execute(
                    query(name, operations=operations, jobs=jobs), key
                )
                for name in (
                    "operation_by_id",
                    "execution_resumable_job",
                    "execution_live_job",
                    "splitting_splittable_job",
                )
            )
        row = found.fetchone()
        if row is None:
            raise OperationNotFound(f"operation {operation_id!s} disappeared")
        operation = OperationRecord.from_row(row)
        if operation.status != OperationStatus.ACTIVE:
            return operation, None
        if (row := resumable.fetchone()) is not None:
            return operation, prepare_retry(conn, operation, JobRecord.from_row(row))
        if (row := live.fetchone()) is not None:
            # One job per operation at a time: wait for the one running elsewhere.
            time.sleep(min(max(float(row["lease_left"]), 0.05), 1.0))
            continue
        if splittable.fetchone() is not None:
            half = split_next(conn, operation, max_attempts)
            if half is not None:
                return operation, half
            continue  # too small to split (it stays failed), or split by another runner
        return operation, None


def _held_back(name: str, operation: OperationRecord) -> bool:
    """Whether no job may start: its class is disabled (the kill switch), or its organization
    is read-only (the operation is then held, as the orchestrator would)."""
    return run_state_stop_reason(name, operation) in (CLASS_DISABLED, READ_ONLY_STOP)


def _take_stage(name: str, operation: OperationRecord, token: str) -> OperationRecord:
    """Take the operation's stage lease; the record it is taken on. The lease is written by
    ``(partition, id)``: an idle operation the partition manager moved into the current
    partition since it was read (:mod:`dramatiq_bbo.partitions.moves`) is read again by id
    and the lease taken there. Once held, nothing moves it until it is given back."""
    for _ in range(3):
        if take_stage(name, operation, token):
            return operation
        with REGISTRY.connection(name) as conn:
            found = fetch_operation(conn, operation.id)
        if found is None or found.partition == operation.partition:
            return operation  # not queued or active any more: the run finds out itself
        operation = found
    return operation


def _activate(name: str, operation_id: Any) -> OperationRecord:
    """queued → active (started_at once), unless its class is disabled; any other status is
    returned as it is."""
    with REGISTRY.connection(name) as conn:
        operation = fetch_operation(conn, operation_id)
        if operation is None:
            raise OperationNotFound(f"no operation {operation_id!s} in database {name!r}")
        if operation.status != OperationStatus.QUEUED:
            return operation
        if _held_back(name, operation):
            return fetch_operation(conn, operation.id) or operation
        operations, _ = tables_for(operation)
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                query("execution_activate_operation", operations=operations),
                {"id": operation.id},
            ).fetchone()
        if row is None:  # changed under us (paused, cancelled, or activated elsewhere)
            return fetch_operation(conn, operation.id) or operation
    active = OperationRecord.from_row(row)
    transitioned(active, OperationStatus.QUEUED)
    return active
