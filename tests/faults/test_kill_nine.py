"""kill -9 of the worker process at 20 random points of one run: every row visited once.

A real ``dramatiq`` worker runs an operation that increments a visit counter on each row,
sleeping inside each sub-batch's transaction so that a kill often lands with a sub-batch
uncommitted (and the run outlasts the kills; it finishes at full speed afterwards). At 20
random moments (seeded, each logged) the worker process is killed with SIGKILL and a fresh
one started. The lease is short and set explicitly (the test must not
depend on the default), and a ticker thread plays the scheduler's cron, so an abandoned job
is taken over as soon as its lease expires. At the end: 0 rows missed, 0 visited twice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo.state.records import OperationStatus
from tests.acceptance.pipeline_operations import make_counter_table
from tests.acceptance.workers import DramatiqWorkers, dramatiq_workers
from tests.faults.fault_operations import PACE_TABLE_DDL, PacedVisit
from tests.faults.worker_faults import (
    Ticker,
    app_process,
    ended,
    processed,
    start_workers,
    status,
    visits,
)
from tests.helpers import wait_until

__all__ = ["app_process", "dramatiq_workers"]  # fixtures, re-exported for pytest

SEED = 20_260_409
KILLS = 20
ROWS = 60_000
#: the sleep in each sub-batch's transaction while the kills go on (ms)
PACE_MS = 50
OPERATIONS = "tests.faults.fault_operations"
#: short, explicit: recovery after a kill takes one lease plus one tick
SETTINGS = {"lease_seconds": 2.0, "max_attempts": 50, "min_job_budget_seconds": 5.0}


def job_running(conn: psycopg.Connection[Any], operation_id: Any) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM bbo.background_operation_jobs_cell_local"
        " WHERE worker_id = %s AND status = 1 AND lease_expires_at > now()",
        [operation_id],
    ).fetchone()
    return bool(row and row[0])


def stuck_state(conn: psycopg.Connection[Any], operation_id: Any) -> str:
    """The operation's and its unfinished jobs' scheduling columns, for a failure message."""
    operation = conn.execute(
        "SELECT status, hold_reason, on_hold_until, lease_owner, lease_expires_at, last_run_at,"
        " next_run_at, now() FROM bbo.background_operation_workers_cell_local WHERE id = %s",
        [operation_id],
    ).fetchone()
    jobs = conn.execute(
        "SELECT id, status, attempts, interruptions, lease_owner, lease_expires_at"
        " FROM bbo.background_operation_jobs_cell_local WHERE worker_id = %s AND status <> 3",
        [operation_id],
    ).fetchall()
    return f"operation: {operation}\nunfinished jobs: {jobs}"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_9_at_20_random_points_of_a_run_leaves_no_row_missed_or_visited_twice(
    conn: psycopg.Connection[Any],
    app_process: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    rng = random.Random(SEED)
    make_counter_table(conn, "counters", ROWS)
    conn.execute(PACE_TABLE_DDL)
    conn.execute("UPDATE fault_pace SET sleep_ms = %s", [PACE_MS])
    app_process(**SETTINGS)
    started = time.monotonic()
    operation_id = bbo.enqueue(
        PacedVisit,
        "counters",
        "id",
        batch_size=1_000,
        sub_batch_size=100,
        min_batch_size=1_000,
        max_batch_size=1_000,
    ).operation.id

    mid_job = 0
    with Ticker():
        for kill in range(1, KILLS + 1):
            workers = start_workers(dramatiq_workers, SETTINGS, operations=OPERATIONS)
            delay = rng.uniform(0.2, 2.0)
            time.sleep(delay)  # the random point of the run; not a wait for a result
            before, running = processed(conn, operation_id), job_running(conn, operation_id)
            workers.kill_workers()
            workers.wait_exit(timeout=30)
            mid_job += running
            print(
                f"kill {kill:2d}: {delay:.2f} s after the worker was ready, {before} rows "
                f"committed, {'a job running' if running else 'between jobs'}"
            )
            assert status(conn, operation_id) in OperationStatus.UNFINISHED, (
                f"the run ended before kill {kill}: make the table larger"
            )
        conn.execute("UPDATE fault_pace SET sleep_ms = 0")  # the rest at full speed
        start_workers(dramatiq_workers, SETTINGS, operations=OPERATIONS)
        try:
            wait_until(ended(conn, operation_id), timeout=120, interval=0.1)
        except AssertionError as exc:  # say what holds it up: a hold, a lease, a job
            raise AssertionError(f"{exc}\n{stuck_state(conn, operation_id)}") from None

    took = time.monotonic() - started
    print(f"{KILLS} kills ({mid_job} mid-job) and the final run took {took:.1f} s")
    assert mid_job >= 3, "too few kills landed while a job ran to prove anything"
    assert status(conn, operation_id) == OperationStatus.FINISHED
    assert visits(conn, "counters") == {1: ROWS}  # 0 missed, 0 visited twice
    assert processed(conn, operation_id) == ROWS
