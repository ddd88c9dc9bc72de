"""The job runner's bookkeeping connection, and the end-of-job write that survives a lost answer.

Claiming a job and recording how its run ended are short autocommit transactions of their own
(:mod:`dramatiq_bbo.jobs.run`), on the connection of a caller running many jobs or on one from
the pool. Either can break under them (a restart, ``pg_terminate_backend``): a broken caller's
connection is set aside for a pooled one, and the steps are retried
(:func:`dramatiq_bbo.reconnect.retrying`). A retried step must recognise its own earlier
try whose ``COMMIT`` happened but whose answer was lost with the connection; for the claim
that is the lease owner on the job row, for the end of the run :func:`earlier_end` below
(which :func:`dramatiq_bbo.jobs.creation.end_and_next` asks when it is a retry).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import REGISTRY
from ..queries import query
from ..reconnect import is_broken
from ..state.records import JobRecord, OperationRecord
from ..state.scopes import tables_for


@contextlib.contextmanager
def bookkeeping(
    name: str, connection: psycopg.Connection[Any] | None
) -> Iterator[psycopg.Connection[Any]]:
    """The caller's bookkeeping connection (unless it broke), else one from the pool."""
    if connection is not None and not is_broken(connection):
        yield connection
        return
    with REGISTRY.connection(name) as conn:
        yield conn


def earlier_end(
    conn: psycopg.Connection[Any], job: JobRecord, jobs: Any, params: dict[str, Any]
) -> dict[str, Any] | None:
    """The job row when it already carries the end ``params`` describe — the same status and
    metrics, no lease: a retried end's earlier try, committed but whose answer was lost with
    its connection. None otherwise (another runner's end, or another run's)."""
    mine = {"worker_id": job.worker_id, "id": job.id}
    with conn.cursor(row_factory=dict_row) as cur:
        done = cur.execute(query("execution_job_by_id", jobs=jobs), mine).fetchone()
    if done is None or done["lease_owner"] is not None or done["status"] != params["status"]:
        return None
    return done if done["metrics"] == json.loads(params["metrics"]) else None


def roll_up_counters(
    conn: psycopg.Connection[Any], operation: OperationRecord, job: JobRecord
) -> None:
    """Move ``job``'s counts its operation lacks onto the operation's counters, in the
    caller's transaction, which holds the operation's row lock (taken before the job row's:
    the one lock order). Queued, not read: it fits in the caller's pipeline.

    A walk rolls its job's counts up at most once a second and when it ends
    (:mod:`dramatiq_bbo.walk.checkpoint`); one whose ``perform()`` raised, or an earlier run
    killed outright, leaves the rest on the job row (``unrolled_processed``,
    ``unrolled_affected``) for the end of the job to move here. Idempotent: a retried end
    finds nothing left."""
    operations, jobs = tables_for(operation)
    params = {
        "partition": operation.partition,
        "id": operation.id,
        "job_partition": job.partition,
        "job_id": job.id,
    }
    conn.execute(query("batching_roll_up_job_end", operations=operations, jobs=jobs), params)


def finish_if_exhausted(
    conn: psycopg.Connection[Any], operation: OperationRecord
) -> OperationRecord | None:
    """active → finished, in the caller's transaction, when the operation's range is walked
    and none of its jobs is left to run or failed: right after its last job, rather than one
    interval later when an orchestrator would find nothing left. None otherwise (the
    orchestrator's end path covers the rest: a range whose last row vanished, failed jobs).
    The caller reports the transition (``transitioned``) once it committed."""
    operations, jobs = tables_for(operation)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            query("execution_finish_exhausted", operations=operations, jobs=jobs),
            {"id": operation.id},
        ).fetchone()
    return OperationRecord.from_row(row) if row is not None else None
