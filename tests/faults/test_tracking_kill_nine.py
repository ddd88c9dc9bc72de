"""kill -9 of a worker whose sub-batch has written its tracked outcomes but not committed:
after the takeover the sub-batch runs again, and every item is counted exactly once.

A trigger on ``bbo.tracked_operations`` sleeps inside the statement that records the outcomes
of the third sub-batch (only while ``tracking_hold`` says so): the counters of that
sub-batch are written, uncommitted, when the test sees the sleep in ``pg_stat_activity`` and
kills the worker process. A fresh worker takes the job over once its (short) lease expired,
from the last checkpoint. The tracked total is one more than the rows, so the operation
stays readable: its counters and failed items must be exactly those of the rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import dramatiq_bbo as bbo
from dramatiq_bbo import tracking
from dramatiq_bbo.state.records import OperationStatus
from tests.acceptance.pipeline_operations import make_counter_table
from tests.acceptance.workers import DramatiqWorkers, dramatiq_workers
from tests.faults.tracking_operations import TrackedVisit
from tests.faults.worker_faults import Ticker, app_process, ended, start_workers, status, visits
from tests.helpers import wait_until

__all__ = ["app_process", "dramatiq_workers"]  # fixtures, re-exported for pytest

ROWS = 300
OPERATIONS = "tests.faults.tracking_operations"
SETTINGS = {"lease_seconds": 2.0, "max_attempts": 20, "min_job_budget_seconds": 5.0}
#: sleeps in the outcomes' statement once two sub-batches (100 items) were counted
HOLD_TRIGGER = """
CREATE TABLE tracking_hold (hold boolean NOT NULL);
INSERT INTO tracking_hold VALUES (true);
CREATE FUNCTION tracking_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.successful_items + NEW.failed_items > 100 AND (SELECT hold FROM tracking_hold) THEN
        PERFORM pg_sleep(4);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tracking_hold AFTER UPDATE ON bbo.tracked_operations
    FOR EACH ROW EXECUTE FUNCTION tracking_hold();
"""


def sleeping_in_the_outcomes(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event = 'PgSleep' AND query LIKE '%%tracked_failed_items%%'"
    ).fetchone()
    return bool(row and row[0])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_sub_batch_killed_after_reporting_counts_each_item_once_after_its_retry(
    conn: psycopg.Connection[Any],
    app_process: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    make_counter_table(conn, "counters", ROWS)
    conn.execute(HOLD_TRIGGER)
    app_process(**SETTINGS)
    tracked = tracking.create_operation("bulk_visit", 1, ROWS + 1)
    operation_id = bbo.enqueue(
        TrackedVisit,
        "counters",
        "id",
        arguments={"tracked_operation_id": tracked},
        batch_size=300,
        sub_batch_size=50,
        min_batch_size=300,
        max_batch_size=300,
    ).operation.id

    with Ticker():
        workers = start_workers(dramatiq_workers, SETTINGS, operations=OPERATIONS)
        wait_until(lambda: sleeping_in_the_outcomes(conn), timeout=60, interval=0.02)
        uncommitted = tracking.get_operation(tracked)  # the sleeping sub-batch is not seen
        workers.kill_workers()
        workers.wait_exit(timeout=30)
        conn.execute("UPDATE tracking_hold SET hold = false")
        start_workers(dramatiq_workers, SETTINGS, operations=OPERATIONS)
        wait_until(ended(conn, operation_id), timeout=60, interval=0.1)

    assert (uncommitted.successful_items, uncommitted.failed_items) == (90, 10)
    assert status(conn, operation_id) == OperationStatus.FINISHED
    assert visits(conn, "counters") == {1: ROWS}
    jobs = bbo.list_jobs(bbo.get_operation(operation_id))
    assert jobs[0].attempts + jobs[0].interruptions >= 2  # it really ran again
    operation = tracking.get_operation(tracked)
    assert (operation.successful_items, operation.failed_items) == (270, 30)
    failed = sorted(int(item.entity_id) for item in tracking.get_failed_items(tracked))
    assert failed == list(range(10, ROWS + 1, 10))  # each once
