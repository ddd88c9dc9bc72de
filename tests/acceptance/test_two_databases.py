"""Two databases in one application: one ``dramatiq`` worker pool configured with
``configure(dsn=A, databases={"cell_b": B})`` runs an operation in each database at the same
time, and each checkpoints into its own database (its operation row, job rows and counters
in the database whose rows it changes, nothing of it in the other)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

import dramatiq_bbo as bbo
from dramatiq_bbo.state.records import OperationStatus
from tests.acceptance.pipeline_operations import PipelineVisit, make_counter_table
from tests.acceptance.workers import DramatiqWorkers, dramatiq_workers
from tests.helpers import wait_until

__all__ = ["dramatiq_workers"]  # the fixture, re-exported for pytest

ROWS = 300
#: organization operations: uuid ids, so each database's rows name their operation unmistakably
OPERATIONS = "bbo.background_operation_workers"
JOBS = "bbo.background_operation_jobs"
#: each sub-batch of 20 rows sleeps 60 ms in its transaction: ~1 s of work per operation,
#: long enough for the two to overlap, short for the suite
SLEEP_MS = 60


def job_intervals(conn: psycopg.Connection[Any]) -> list[tuple[Any, Any, Any]]:
    return conn.execute(
        f"SELECT worker_id, started_at, finished_at FROM {JOBS} ORDER BY started_at"
    ).fetchall()


def test_operations_in_two_databases_run_at_once_under_one_worker_pool(
    dsn: str,
    database_factory: Callable[..., str],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    cell_b = database_factory()
    bbo.configure(dsn=dsn, databases={"cell_b": cell_b})
    for target in (dsn, cell_b):
        with psycopg.connect(target, autocommit=True) as conn:
            make_counter_table(conn, "counters", ROWS)
    options = {
        "arguments": {"sleep_ms": SLEEP_MS},
        "batch_size": 100,
        "sub_batch_size": 20,
        "organization_id": 1,
        "user_id": 1,
    }
    in_main = bbo.enqueue(PipelineVisit, "counters", "id", **options).operation.id
    in_b = bbo.enqueue(PipelineVisit, "counters", "id", database="cell_b", **options).operation.id

    dramatiq_workers(
        processes=1,
        threads=4,
        settings={"scheduler_pass_seconds": 0.2},
        extra_env={"BBO_APP_CELL_B_DSN": cell_b},
    )

    def both_finished() -> bool:
        states = (
            bbo.get_operation(in_main).status,
            bbo.get_operation(in_b, database="cell_b").status,
        )
        return states == (OperationStatus.FINISHED, OperationStatus.FINISHED)

    wait_until(both_finished, timeout=60, interval=0.1)

    with psycopg.connect(dsn) as a, psycopg.connect(cell_b) as b:
        for conn, own in ((a, in_main), (b, in_b)):
            operations = conn.execute(f"SELECT id FROM {OPERATIONS}").fetchall()
            assert operations == [(own,)]  # its own operation only
            jobs = job_intervals(conn)
            assert jobs and {worker for worker, _, _ in jobs} == {own}
            visited = conn.execute("SELECT visits, count(*) FROM counters GROUP BY 1").fetchall()
            assert visited == [(1, ROWS)]
        jobs_a, jobs_b = job_intervals(a), job_intervals(b)
    overlapping = [
        (ja, jb)
        for ja in jobs_a
        for jb in jobs_b
        if ja[1] < jb[2] and jb[1] < ja[2]  # started before the other finished, both ways
    ]
    assert overlapping, f"no job of one ran while one of the other did: {jobs_a} {jobs_b}"
    assert bbo.get_operation(in_b, database="cell_b").processed_tuple_count == ROWS
