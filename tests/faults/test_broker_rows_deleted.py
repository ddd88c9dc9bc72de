"""The pipeline's messages deleted from ``dramatiq.queue`` mid-run: the scheduler re-drives
the operation, which completes with every row visited once.

A live dramatiq-pg consumer takes a message (even a delayed one) into memory as soon as it is
written, so deleting rows under a running worker mostly deletes what is already being
handled. The test therefore loses the messages for good: several times during the run it
kills the worker (SIGKILL), deletes every row of the pipeline's queues (the orchestrator and
runner messages, queued or consumed), and starts a fresh worker, which finds nothing to do.
Only the scheduler can carry the operation on: once the operation's stage lease and its
job's lease (explicit and short here) have expired, a tick (from a ticker thread, in place
of the minute cron) hands it to the orchestrator again.
"""

from __future__ import annotations

import random
import time
from collections import Counter
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

ROWS = 12_000
LOSSES = 5
SEED = 1_042
SETTINGS = {"lease_seconds": 2.0, "min_job_budget_seconds": 5.0}
OPERATIONS = "tests.faults.fault_operations"
QUEUES = ["background_operations", "background_operations.DQ"]


def delete_pipeline_messages(conn: psycopg.Connection[Any]) -> list[str]:
    """Delete every row of the pipeline's queues; the actors of the messages not yet done."""
    rows = conn.execute(
        "DELETE FROM dramatiq.queue WHERE queue_name = ANY(%s)"
        " RETURNING message ->> 'actor_name', state::text",
        [QUEUES],
    ).fetchall()
    return [actor for actor, state in rows if state != "done"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_messages_deleted_from_the_broker_queue_mid_run_are_re_driven_by_the_scheduler(
    conn: psycopg.Connection[Any],
    app_process: Callable[..., None],
    dramatiq_workers: Callable[..., DramatiqWorkers],
) -> None:
    make_counter_table(conn, "counters", ROWS)
    conn.execute(PACE_TABLE_DDL)
    conn.execute("UPDATE fault_pace SET sleep_ms = 20")
    app_process(**SETTINGS)
    workers = start_workers(dramatiq_workers, SETTINGS, operations=OPERATIONS)
    operation_id = bbo.enqueue(
        PacedVisit,
        "counters",
        "id",
        batch_size=1_000,
        sub_batch_size=100,
        min_batch_size=1_000,
        max_batch_size=1_000,
        interval_seconds=0.5,  # a delayed orchestrator message between two jobs
    ).operation.id

    rng = random.Random(SEED)
    deleted: Counter[str] = Counter()
    started = time.monotonic()
    with Ticker() as ticker:
        for loss in range(1, LOSSES + 1):
            before = processed(conn, operation_id)
            wait_until(lambda b=before: processed(conn, operation_id) > b, timeout=60)  # type: ignore[misc]
            time.sleep(rng.uniform(0.0, 0.6))  # in a job, or between jobs (delayed message)
            workers.kill_workers()
            workers.wait_exit(timeout=30)
            lost = delete_pipeline_messages(conn)
            deleted.update(lost)
            print(f"loss {loss}: {processed(conn, operation_id)} rows committed, deleted {lost}")
            assert status(conn, operation_id) in OperationStatus.UNFINISHED
            workers = start_workers(dramatiq_workers, SETTINGS, operations=OPERATIONS)
        wait_until(ended(conn, operation_id), timeout=90, interval=0.1)

    redriven = ticker.dispatched.count(str(operation_id))
    print(
        f"deleted {dict(deleted)}, re-driven {redriven} times, {time.monotonic() - started:.1f} s"
    )
    assert sum(deleted.values()) >= LOSSES, "messages in flight were deleted at each loss"
    assert redriven >= LOSSES, "the scheduler re-drove the operation after each loss"
    assert status(conn, operation_id) == OperationStatus.FINISHED
    assert visits(conn, "counters") == {1: ROWS}
    assert processed(conn, operation_id) == ROWS
