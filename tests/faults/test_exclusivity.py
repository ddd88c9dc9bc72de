"""One job per operation, always: ``run_to_completion`` in the process that enqueued, while a
real worker already runs the operation, never runs a job of it at the same time as the worker.

The caller enqueues inside its own transaction (``connection=``), which also writes the
pipeline's first message; a ``dramatiq`` worker picks it up as soon as the caller commits. The
caller then calls ``run_to_completion`` while the worker is in the middle of a job: it takes
the operation's stage lease, waits for the worker's job to end, and the worker's runner, seeing
the lease elsewhere, sends no next message. Every run of every job is logged (``RecordedVisit``)
with its process and its start and end on the server's clock.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.state.records import JobStatus, OperationStatus
from tests.acceptance.pipeline_operations import RUNS_TABLE_DDL, RecordedVisit, make_counter_table
from tests.acceptance.workers import DramatiqWorkers, dramatiq_workers
from tests.faults.liveness_support import pipeline
from tests.helpers import job_rows, wait_until

__all__ = ["dramatiq_workers", "pipeline"]


def assert_sequential(intervals: list[tuple[Any, Any]], what: str) -> None:
    ordered = sorted(intervals)
    for (start, end), (next_start, _) in zip(ordered, ordered[1:], strict=False):
        assert end is not None and start <= end <= next_start, f"{what} overlap: {ordered}"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_run_to_completion_beside_a_worker_never_overlaps_two_jobs_of_the_operation(
    dsn: str,
    conn: psycopg.Connection[Any],
    pipeline: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    rows = 5_000
    conn.execute(RUNS_TABLE_DDL)
    make_counter_table(conn, "items", rows)
    pipeline()
    workers = dramatiq_workers(processes=1, threads=4)

    with psycopg.connect(dsn) as caller:  # the caller's own transaction
        operation_id = bbo.enqueue(
            RecordedVisit,
            "items",
            "id",
            connection=caller,
            arguments={"sleep_ms": 60},
            batch_size=500,
            sub_batch_size=100,
        ).operation.id
        caller.commit()
    # the worker is in the middle of a job
    wait_until(
        lambda: conn.execute(
            "SELECT count(*) FROM pipeline_runs WHERE ended_at IS NULL AND pid <> %s",
            [os.getpid()],
        ).fetchone()[0],
        timeout=30,
        interval=0.01,
    )

    final = bbo.run_to_completion(operation_id)

    assert final.status == OperationStatus.FINISHED
    assert dict(conn.execute("SELECT visits, count(*) FROM items GROUP BY 1").fetchall()) == {
        1: rows
    }
    jobs = job_rows(conn, operation_id)
    assert {JobStatus(j["status"]) for j in jobs} == {JobStatus.SUCCEEDED}
    assert_sequential([(j["started_at"], j["finished_at"]) for j in jobs], "jobs")
    runs = conn.execute(
        "SELECT started_at, ended_at, pid FROM pipeline_runs WHERE operation_id = %s",
        [str(operation_id)],
    ).fetchall()
    assert_sequential([(start, end) for start, end, _ in runs], "runs")
    assert len(runs) == len(jobs)  # no job ran twice
    pids = {pid for _, _, pid in runs}
    assert pids == {os.getpid(), *workers.worker_pids()}, "both the worker and the caller ran jobs"
    # once run_to_completion holds the operation, the worker runs none of its jobs
    worker_runs = sorted(start for start, _, pid in runs if pid != os.getpid())
    caller_runs = sorted(start for start, _, pid in runs if pid == os.getpid())
    assert worker_runs[-1] < caller_runs[0]
